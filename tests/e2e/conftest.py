"""End-to-end suites run on both paths: the fast path and `--front off` (tests/proxy.py)."""

from tests.proxy import generate_paths as pytest_generate_tests
from tests.proxy import proxy_path

__all__ = ["proxy_path", "pytest_generate_tests"]
