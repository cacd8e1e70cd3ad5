"""What the benchmark needs on the machine, installed when missing, and the machine described.

Debian packages (nginx, squid, hey, curl) come from apt-get, run once with `apt-get update`
first, and only as root. keys-on-the-wire goes into a virtualenv of its own under the user's
cache directory (it pins pydantic and brings jinja2: nothing the egress venv should carry);
if it does not install, the run goes on without it and says so.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Machine", "describe_machine", "ensure_kow", "ensure_tools", "find_tools"]

REPO = Path(__file__).resolve().parent.parent
PACKAGES = {"nginx": "nginx", "squid": "squid", "hey": "hey", "curl": "curl"}
KOW_PACKAGE = "keys-on-the-wire"


def _which(cmd: str) -> str | None:
    # nginx and squid live in /usr/sbin, which a non-login PATH may lack.
    return shutil.which(cmd) or shutil.which(cmd, path="/usr/sbin:/sbin:/usr/local/sbin")


def ensure_tools(log: Callable[[str], None]) -> None:
    """Install the Debian packages whose commands are missing; raise if that is impossible."""
    missing = [pkg for cmd, pkg in PACKAGES.items() if _which(cmd) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"missing {', '.join(missing)}; install them (apt-get install "
                           f"{' '.join(missing)}) or run the benchmark as root")
    log(f"installing {' '.join(missing)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, timeout=600,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env,
                   timeout=900, stdout=subprocess.DEVNULL)
    # Debian starts services on install where it can; the benchmark runs its own.
    for service in ("nginx", "squid"):
        if service in missing and shutil.which("service"):
            subprocess.run(["service", service, "stop"], capture_output=True, timeout=60,
                           check=False)
    still = [pkg for cmd, pkg in PACKAGES.items() if _which(cmd) is None]
    if still:
        raise RuntimeError(f"apt-get did not provide {', '.join(still)}")
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


def ensure_kow(log: Callable[[str], None]) -> tuple[str | None, str]:
    """(python of kow's venv or None, a note saying what happened)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = cache / "egress-bench" / "kow-venv"
    python = venv / "bin" / "python"
    if python.exists() and _kow_version(str(python)):
        return str(python), f"{KOW_PACKAGE} {_kow_version(str(python))} (venv {venv})"
    log(f"installing {KOW_PACKAGE} from PyPI into {venv}")
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                       capture_output=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "-q", KOW_PACKAGE], check=True,
                       capture_output=True, text=True, timeout=900)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        tail = str(detail).strip().splitlines()[-1:] or ["unknown error"]
        return None, f"{KOW_PACKAGE} did not install from PyPI: {tail[0][:200]}"
    version = _kow_version(str(python))
    if not version:
        return None, f"{KOW_PACKAGE} installed but cannot be imported"
    return str(python), f"{KOW_PACKAGE} {version} (venv {venv})"


def _kow_version(python: str) -> str | None:
    code = "import importlib.metadata as m, kow; print(m.version('keys-on-the-wire'))"
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60,
                             check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def find_tools() -> tuple[str, str]:
    """(egress, mitmdump) from the venv this harness runs in, else the repository's .venv."""
    for bindir in (Path(sys.executable).parent, REPO / ".venv" / "bin"):
        egress, mitmdump = bindir / "egress", bindir / "mitmdump"
        if egress.exists() and mitmdump.exists():
            return str(egress), str(mitmdump)
    raise RuntimeError("no egress/mitmdump next to this Python nor in .venv; run ./run setup")


@dataclass(frozen=True)
class Machine:
    rows: list[tuple[str, str]]


def _out(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (p.stdout or p.stderr).strip()


def _dpkg(pkg: str) -> str:
    return _out(["dpkg-query", "-W", "-f=${Version}", pkg]) or "?"


def describe_machine(kow_note: str) -> Machine:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), "?")
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")))
    import mitmproxy.version

    rev = _out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = _out(["git", "-C", str(REPO), "status", "--porcelain", "--", "egress"])
    return Machine([
        ("CPU", f"{os.cpu_count()} x {model} (nproc {_out(['nproc'])})"),
        ("memory", f"{mem_kb / 1048576:.1f} GiB"),
        ("kernel", platform.release()),
        ("OS", _os_name()),
        ("Python", platform.python_version()),
        ("mitmproxy", mitmproxy.version.VERSION),
        ("egress", f"git {rev}{' + uncommitted changes in egress/' if dirty else ''}"),
        ("nginx", _dpkg("nginx") if _dpkg("nginx") != "?" else _dpkg("nginx-light")),
        ("squid", _dpkg("squid")),
        ("hey", _dpkg("hey")),
        ("curl", _dpkg("curl")),
        ("keys-on-the-wire", kow_note),
    ])


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()
