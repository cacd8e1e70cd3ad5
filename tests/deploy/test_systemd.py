"""docker/egress.service: hardened, loopback-only, and accepted by systemd and by egress."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from egress.cli.main import build_parser
from tests.deploy.checks import parse_unit, unit_problems

UNIT = Path(__file__).parents[2] / "docker" / "egress.service"


def test_unit_is_hardened_and_listens_on_loopback() -> None:
    assert unit_problems(parse_unit(UNIT.read_text())) == []


def test_exec_start_is_a_valid_egress_serve_command_line() -> None:
    argv = shlex.split(parse_unit(UNIT.read_text())["Service"]["ExecStart"][-1])
    assert argv[0] == "/opt/egress/bin/egress"
    args = build_parser().parse_args(argv[1:])  # exits (fails the test) on an unknown option
    assert (args.command, args.listen, str(args.data_dir)) == ("serve", "127.0.0.1:8080", "/var/lib/egress")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit_without_warnings(tmp_path: Path) -> None:
    # Point ExecStart at this checkout's egress so the check does not need /opt/egress.
    egress = str(Path(sys.executable).with_name("egress"))
    unit = tmp_path / "egress.service"
    unit.write_text(UNIT.read_text().replace("/opt/egress/bin/egress", egress))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize("line, replacement, problem", [
    pytest.param("User=egress", "User=root", "runs as root: set User= (a dedicated user) or DynamicUser=yes", id="root user"),
    pytest.param("NoNewPrivileges=yes", "NoNewPrivileges=no", "NoNewPrivileges is 'no', want 'yes'", id="new privileges allowed"),
    pytest.param("ProtectSystem=strict", "ProtectSystem=full", "ProtectSystem is 'full', want 'strict'", id="system partly writable"),
    pytest.param("MemoryMax=1G", "", "MemoryMax is not set", id="no memory limit"),
    pytest.param("CPUQuota=200%", "", "CPUQuota is not set", id="no CPU limit"),
    pytest.param("--listen 127.0.0.1:8080", "--listen 0.0.0.0:8080", "listens on 0.0.0.0:8080, not on loopback", id="listens on every interface"),
    pytest.param("CapabilityBoundingSet=", "CapabilityBoundingSet=CAP_NET_ADMIN", "CapabilityBoundingSet is 'CAP_NET_ADMIN', want ''", id="keeps a capability"),
])
def test_each_check_catches_its_problem(line: str, replacement: str, problem: str) -> None:
    text = UNIT.read_text()
    assert line in text
    assert problem in unit_problems(parse_unit(text.replace(line, replacement)))
