"""End-to-end suites run on both paths: the fast path and `--front off` (tests/proxy.py)."""

from tests.proxy import generate_paths as pytest_generate_tests

__all__ = ["pytest_generate_tests"]
