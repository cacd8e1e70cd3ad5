"""Shipping to a real syslog receiver (Debian's rsyslogd): every line, once, in order.

egress ships RFC 5424 messages over TCP with octet counting; rsyslogd parses them and writes
what it received. The audit line is the MSG, so what the receiver stored is compared with
DATA_DIR/audit.jsonl byte for byte, and checked with `egress audit verify`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.audit.shipworld import ShipWorld, records, ship_world
from tests.clients import basic, read_response
from tests.conftest import TestCA
from tests.parts.rsyslog import RsyslogReceiver, find_rsyslogd, rsyslog_receiver
from tests.proxy import EGRESS, stop_process

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/rsyslogd").exists() and
                                not __import__("shutil").which("rsyslogd"),
                                reason="rsyslogd not installed (.ci/run installs rsyslog)")


def wait_for(check: object, timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()  # type: ignore[operator]
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s (last: {last!r})")


@pytest.fixture(scope="module")
def syslog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RsyslogReceiver]:
    find_rsyslogd()
    with rsyslog_receiver(tmp_path_factory.mktemp("rsyslog")) as receiver:
        yield receiver


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, syslog: RsyslogReceiver) -> Iterator[ShipWorld]:
    with ship_world(tmp_path_factory.mktemp("ship-syslog"),
                    f'- syslog: {{address: "{syslog.address}"}}\n',
                    extra_audit="ship_degraded_after: 2s\n") as w:
        yield w


def received(syslog: RsyslogReceiver) -> list[str]:
    return [m["msg"] for m in syslog.messages()]


def caught_up(world: ShipWorld, syslog: RsyslogReceiver) -> list[str]:
    """What rsyslog stored, once it holds every line egress wrote (bounded wait)."""
    def check() -> list[str] | None:
        lines, got = world.audit_lines(), received(syslog)
        return got if lines and len(got) >= len(lines) else None
    return wait_for(check, timeout=60)  # type: ignore[return-value]


def test_every_denial_of_a_run_arrives_as_rfc5424_with_the_audit_line(
        world: ShipWorld, syslog: RsyslogReceiver) -> None:
    world.deny_connects(40)
    # A plain-HTTP denial and a 407 are audit lines too.
    with socket.create_connection((world.proxy.host, world.proxy.port), timeout=10) as sock:
        auth = basic("alpha", world.proxy.tokens["alpha"])
        sock.sendall(b"GET http://exfil.denied.test/collect?k=v HTTP/1.1\r\n"
                     b"Host: exfil.denied.test\r\nProxy-Authorization: " + auth.encode()
                     + b"\r\n\r\n")
        assert read_response(sock).status == 403
    with socket.create_connection((world.proxy.host, world.proxy.port), timeout=10) as sock:
        sock.sendall(b"CONNECT anon.denied.test:443 HTTP/1.1\r\nHost: anon.denied.test:443\r\n\r\n")
        assert read_response(sock).status == 407
    got = caught_up(world, syslog)
    lines = world.audit_lines()
    assert got == lines  # every line, once, in order, byte for byte
    reasons = [r["reason"] for r in records(lines)]
    assert reasons.count("host_not_allowed") == 41 and reasons[-1] == "auth_required"
    first = syslog.messages()[0]
    assert (first["app"], first["msgid"], first["facility"], first["severity"], first["sd"]) == (
        "egress", "deny", "13", "4", "-")
    assert first["timestamp"] == json.loads(first["msg"])["ts"]
    assert "k=v" not in "".join(got)  # query strings never leave egress either


def test_receiver_killed_mid_run_gets_all_10000_later_once_in_order(
        world: ShipWorld, syslog: RsyslogReceiver) -> None:
    before = caught_up(world, syslog)
    name = f"syslog://{syslog.address}"
    depth = f'egress_audit_spool_lines{{destination="{name}"}}'
    wait_for(lambda: world.metrics()[depth] == 0)  # confirmed: never sent again
    syslog.kill()
    world.deny_connects(10_000, tag="outage")
    lines = world.audit_lines()
    outage = lines[len(before):]
    assert len(outage) == 10_000
    # Meanwhile: waiting in the spool, shown in the metrics; /readyz degraded, still ready.
    assert world.metrics()[depth] == 10_000
    ready = world.admin("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert ready.json()["degraded"] == [f"audit shipping to {name} is more than 2s behind"]
    assert received(syslog) == before
    syslog.start()
    got = caught_up(world, syslog)
    assert len(got) == len(lines)
    assert got[len(before):] == outage  # every one of the 10,000, once, in order
    assert len(set(got)) == len(got)
    metrics = wait_for(lambda: (m := world.metrics())[depth] == 0 and m)
    assert metrics[f'egress_audit_shipped_total{{destination="{name}"}}'] == len(lines)  # type: ignore[index]
    assert metrics[f'egress_audit_ship_failures_total{{destination="{name}"}}'] >= 1  # type: ignore[index]
    assert "degraded" not in world.admin("/readyz").json()


def test_receivers_copy_verifies_and_shutdown_checkpoint_is_shipped(
        tmp_path: Path, syslog: RsyslogReceiver) -> None:
    start = len(syslog.messages())
    with ship_world(tmp_path, f'- syslog: {{address: "{syslog.address}"}}\n') as w:
        w.deny_connects(20, tag="stop")
        stop_process(w.proxy.process)  # SIGTERM: a checkpoint line, shipped before exit
        lines = w.audit_lines()
    last = json.loads(lines[-1])
    assert (last["kind"], last["event"]) == ("audit", "checkpoint") and "sig" in last
    got = wait_for(lambda: (m := received(syslog)[start:]) and len(m) >= len(lines) and m, 10)
    assert got == lines
    stored = tmp_path / "received.log"
    stored.write_text("\n".join(json.dumps(m) for m in syslog.messages()[start:]) + "\n")
    pub = subprocess.run([EGRESS, "audit", "pubkey", "--data-dir", str(tmp_path / "data")],
                         capture_output=True, text=True, check=True).stdout
    (tmp_path / "egress.pub").write_text(pub)
    check = subprocess.run([EGRESS, "audit", "verify", "--pubkey", str(tmp_path / "egress.pub"),
                            "--data-dir", str(tmp_path / "nowhere"), str(stored)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "21 lines" in check.stderr and "2 signatures verified" in check.stderr


def test_tls_receiver(tmp_path: Path, test_ca: TestCA) -> None:
    with rsyslog_receiver(tmp_path / "rsyslog", tls=test_ca,
                          names=["syslog.logs.test"]) as syslog:
        ship = f'- syslog: {{address: "{syslog.address}", tls: true, ca: "{test_ca.path}"}}\n'
        with ship_world(tmp_path / "w", ship) as w:
            w.deny_connects(15)
            got = wait_for(lambda: len(received(syslog)) >= 15 and received(syslog), 30)
            assert got == w.audit_lines()


def test_tls_receiver_with_a_certificate_egress_does_not_trust_gets_nothing(
        tmp_path: Path, test_ca: TestCA) -> None:
    import trustme

    with rsyslog_receiver(tmp_path / "rsyslog", tls=test_ca) as syslog:
        other = tmp_path / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(other))
        ship = f'- syslog: {{address: "{syslog.address}", tls: true, ca: "{other}"}}\n'
        with ship_world(tmp_path / "w", ship) as w:
            w.deny_connects(5)
            name = f"syslog://{syslog.address}"
            wait_for(lambda: w.metrics()[f'egress_audit_ship_failures_total{{destination="{name}"}}'] >= 1)
            assert w.metrics()[f'egress_audit_spool_lines{{destination="{name}"}}'] == 5
            assert "SSLCertVerificationError" in w.proxy.log()
        assert syslog.messages() == []  # nothing in clear, nothing to an unverified receiver
