"""Self-test of tests/parts/rsyslog.py: real rsyslogd receiving RFC 5424 over TCP and TLS."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pytest

from tests.conftest import TestCA
from tests.parts.rsyslog import rsyslog_receiver

SD = '[egress@32473 skill="alpha" reason="host_not_allowed"]'


def rfc5424(n: int, msg: str = '{"kind":"denial"}') -> str:
    return f"<132>1 2026-12-02T12:00:00.{n:06d}Z egress-host egress 4242 denial {SD} {msg}"


def octet_counted(message: str) -> bytes:
    raw = message.encode()
    return str(len(raw)).encode() + b" " + raw


def test_octet_counted_frames_split_anywhere_arrive_whole_and_parsed(tmp_path: Path) -> None:
    with rsyslog_receiver(tmp_path) as syslog:
        stream = b"".join(octet_counted(rfc5424(i)) for i in range(50))
        stream += octet_counted(rfc5424(50, "line one\nline two"))  # LF inside: still one
        with socket.create_connection((syslog.host, syslog.port), timeout=5) as conn:
            for start in range(0, len(stream), 37):  # cuts through lengths and messages
                conn.sendall(stream[start:start + 37])
        got = syslog.wait_for(51, timeout=20)
    assert len(got) == 51
    assert [m["timestamp"] for m in got[:50]] == [
        f"2026-12-02T12:00:00.{i:06d}Z" for i in range(50)]
    first = got[0]
    assert (first["app"], first["procid"], first["msgid"], first["hostname"]) == (
        "egress", "4242", "denial", "egress-host")
    assert first["sd"] == SD and first["msg"] == '{"kind":"denial"}'
    assert (first["facility"], first["severity"]) == ("16", "4")
    assert got[50]["msg"] == "line one\nline two"


def test_large_message_is_kept_whole(tmp_path: Path) -> None:
    body = "x" * 100_000
    with rsyslog_receiver(tmp_path) as syslog:
        with socket.create_connection((syslog.host, syslog.port), timeout=5) as conn:
            conn.sendall(octet_counted(rfc5424(1, body)))
        assert syslog.wait_for(1)[0]["msg"] == body


def test_tls_with_the_test_ca(tmp_path: Path, test_ca: TestCA) -> None:
    with rsyslog_receiver(tmp_path, tls=test_ca) as syslog:
        context = ssl.create_default_context(cafile=test_ca.path)
        with socket.create_connection((syslog.host, syslog.port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="syslog.logs.test") as conn:
            conn.sendall(octet_counted(rfc5424(1, "over tls")))
        assert syslog.wait_for(1)[0]["msg"] == "over tls"
        # Plain text to the TLS port is not a message.
        with socket.create_connection((syslog.host, syslog.port), timeout=5) as conn:
            conn.sendall(octet_counted(rfc5424(2, "in clear")))
            conn.settimeout(5)
            with pytest.raises((ConnectionError, TimeoutError, OSError)):
                for _ in range(10):  # bounded: the server answers with a TLS alert or closes
                    if not conn.recv(4096):
                        raise ConnectionResetError("closed")
        time.sleep(0.3)
        assert [m["msg"] for m in syslog.messages()] == ["over tls"]


def test_tls_client_refuses_a_certificate_for_another_name(tmp_path: Path,
                                                           test_ca: TestCA) -> None:
    with rsyslog_receiver(tmp_path, tls=test_ca) as syslog:
        context = ssl.create_default_context(cafile=test_ca.path)
        with socket.create_connection((syslog.host, syslog.port), timeout=5) as raw, \
                pytest.raises(ssl.SSLCertVerificationError):
            context.wrap_socket(raw, server_hostname="other.logs.test")


def test_kill_and_restart_keeps_what_arrived(tmp_path: Path) -> None:
    with rsyslog_receiver(tmp_path) as syslog:
        with socket.create_connection((syslog.host, syslog.port), timeout=5) as conn:
            conn.sendall(b"".join(octet_counted(rfc5424(i)) for i in range(5)))
        syslog.wait_for(5)
        syslog.kill()
        assert not syslog.running
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((syslog.host, syslog.port), timeout=5).close()
        syslog.start()
        with socket.create_connection((syslog.host, syslog.port), timeout=5) as conn:
            conn.sendall(b"".join(octet_counted(rfc5424(i)) for i in range(5, 8)))
        got = syslog.wait_for(8)
    assert [m["timestamp"][-7:-1] for m in got] == [f"{i:06d}" for i in range(8)]
    assert "imuxsock" not in syslog.config_path.read_text()  # never the machine's own log
