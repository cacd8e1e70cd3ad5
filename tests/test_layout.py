"""The house's rules, checked: what each package may import, what loading costs, the surface.

    cli -> ops / proxy -> adapters (netguard, secrets, credentials, audit, identity) -> policy
Nothing outside egress/proxy imports mitmproxy; nothing imports egress.cli; the core imports
no adapter; loading a policy (with a credential) loads none of dnspython, aiohttp, mitmproxy.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import egress

ROOT = Path(__file__).resolve().parents[1] / "egress"
HEAVY = ("mitmproxy", "aiohttp", "dns")
CORE = ("egress.errors", "egress.reasons", "egress.policy")
ADAPTERS = ("egress.netguard", "egress.secrets", "egress.credentials", "egress.audit",
            "egress.identity")


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function (TYPE_CHECKING too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): imports(p) for p in sorted(ROOT.rglob("*.py"))}


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_only_the_proxy_package_imports_mitmproxy() -> None:
    offenders = {m for m, found in MODULES.items()
                 if not within(m, ("egress.proxy",)) and any(within(i, ("mitmproxy",))
                                                              for i in found)}
    assert offenders == set()


def test_nothing_imports_the_cli() -> None:
    offenders = {m for m, found in MODULES.items()
                 if not within(m, ("egress.cli",)) and any(within(i, ("egress.cli",))
                                                            for i in found)}
    assert offenders == set()


@pytest.mark.parametrize("layer, forbidden", [
    pytest.param(CORE, ("egress.netguard", "egress.secrets", "egress.credentials",
                        "egress.audit", "egress.identity", "egress.proxy", "egress.ops",
                        "egress.cli", "egress.openclaw", "egress.jail", *HEAVY),
                 id="the core imports no adapter and no I/O library"),
    pytest.param(ADAPTERS, ("egress.proxy", "egress.ops", "egress.cli", "egress.openclaw",
                            "mitmproxy"), id="adapters import only the core"),
    pytest.param(("egress.ops",), ("egress.proxy", "egress.cli", "mitmproxy"),
                 id="ops never imports the proxy"),
    pytest.param(("egress.jail",), ("egress.proxy", "egress.ops", "egress.cli", *HEAVY),
                 id="the jail stands alone"),
])
def test_arrows_run_one_way(layer: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    offenders = {f"{m} imports {i}" for m, found in MODULES.items() if within(m, layer)
                 for i in found if within(i, forbidden)}
    assert offenders == set()


def loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\n"
                          "print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"],
                         check=True, capture_output=True, text=True).stdout.split()
    return set(out) & {"mitmproxy", "aiohttp", "dns"}


def test_loading_a_policy_with_a_credential_loads_no_io_library(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "settings:\n  secrets:\n    vault: {addr: 'http://127.0.0.1:8200', auth: {token_env: T}}\n"
        "skills:\n  s:\n    allow: [{host: api.example.com, credential: k}]\n"
        "    credentials:\n      k: {secret: 'vault:secret/s#k'}\n")
    code = (f"from egress.policy.load import load_policy_dir\n"
            f"from egress.policy.decide import decide, Destination\n"
            f"from egress.policy.lint import policy_warnings\n"
            f"p = load_policy_dir({str(tmp_path)!r})\n"
            f"assert decide(p, 's', Destination('api.example.com', 443)).allowed\n"
            f"policy_warnings(p)\nimport egress")
    assert loaded_after(code) == set()


def test_token_list_loads_no_proxy_dependency(tmp_path: Path) -> None:
    code = (f"from egress.cli.main import main\n"
            f"assert main(['token', 'list', '--data-dir', {str(tmp_path)!r}]) == 0")
    assert loaded_after(code) == set()


def test_the_published_surface() -> None:
    assert egress.__all__ == sorted(egress.__all__)
    assert set(egress.__all__) == {
        "Admitted", "Arrival", "ConfigError", "Decision", "Destination", "EgressAddon",
        "EgressError", "Gate", "IdentityError", "PolicyError", "PolicyErrors", "PolicySet",
        "Problem", "Reason", "Refused", "ResolveError", "SecretError", "SecretNotFound",
        "SecretUnavailable", "Verdict", "__version__", "decide", "load_policy_dir",
        "load_policy_texts"}
    for name in egress.__all__:
        assert getattr(egress, name) is not None, name


def test_every_package_says_what_it_may_import() -> None:
    for init in ROOT.rglob("__init__.py"):
        if init.parent == ROOT:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "may import" in doc, init
