"""A world for the request-head suites (absolute form, path spelling, header bytes, properties).

Like the shared adversarial world, but with an HTTP/2 recording upstream beside the HTTP/1.1
one, and rules with and without `paths`. Every name resolves to 127.0.0.2. The skill `mallory`
may reach:
  api.req.test    TLS, HTTP/1.1 upstream: GET/HEAD on /v1/invoices and /v1/invoices/*,
                  credential `key` injected (Authorization: Bearer <key>)
  open.req.test   TLS, HTTP/1.1 upstream: any method and path, credential `key` injected
  h2.req.test     TLS, HTTP/2 upstream: as api.req.test
  h2open.req.test TLS, HTTP/2 upstream: as open.req.test
  plain.req.test  plain HTTP: GET on /v1/invoices and /v1/invoices/*
  plainopen.req.test  plain HTTP: anything
other.req.test is served by the same upstreams but not allowed.

Clients here are raw: sockets, ssl, and the `h2` library with outbound validation off, so a
test sends exactly the bytes an attacker would.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from tests.clients import RawResponse, basic, read_response
from tests.conftest import UPSTREAM_IP, TestCA, write_policy
from tests.dnsserver import DnsServer
from tests.h2recording import H2RecordingUpstream, h2_recording_upstream
from tests.proxy import Proxy, run_proxy
from tests.recording import RecordingUpstream, recording_upstream

NAMES = ["api.req.test", "open.req.test", "h2.req.test", "h2open.req.test", "plain.req.test",
         "plainopen.req.test", "other.req.test"]
REAL_KEY = "req_REAL_" + os.urandom(12).hex()
PLACEHOLDER = "req_placeholder_000000000000"
SKILL = "mallory"


@dataclass
class ReqWorld:
    proxy: Proxy
    tls: RecordingUpstream
    h2: H2RecordingUpstream
    plain: RecordingUpstream
    bundle: str  # egress CA + test CA: what the skill trusts

    @property
    def proxy_addr(self) -> tuple[str, int]:
        return (self.proxy.host, self.proxy.port)

    def port_of(self, host: str) -> int:
        if host.startswith("h2"):
            return self.h2.port
        if host.startswith("plain"):
            return self.plain.port
        return self.tls.port

    def reset(self) -> None:
        self.tls.reset()
        self.h2.reset()
        self.plain.reset()

    def auth(self) -> str:
        return basic(SKILL, self.proxy.tokens[SKILL])

    def audit_count(self) -> int:
        return len(self.proxy.audit())

    def audit_after(self, count: int, *, wait: float = 3.0, want: int = 1) -> list[dict[str, Any]]:
        """Audit records written after the first `count` (waits up to `wait` s for `want`)."""
        deadline = time.monotonic() + wait
        while True:
            new = self.proxy.audit()[count:]
            if len(new) >= want or time.monotonic() > deadline:
                return new
            time.sleep(0.05)


@contextmanager
def req_world(tmp: Path, test_ca: TestCA, *, log_allowed: bool = False) -> Iterator[ReqWorld]:
    key_file = tmp / "key"
    key_file.write_text(REAL_KEY + "\n")
    key_file.chmod(0o600)
    with DnsServer() as dns, \
            recording_upstream(UPSTREAM_IP, ca=test_ca.ca, names=NAMES) as tls, \
            h2_recording_upstream(UPSTREAM_IP, ca=test_ca.ca, names=NAMES) as h2up, \
            recording_upstream(UPSTREAM_IP) as plain:
        for name in NAMES:
            dns.set(name, [UPSTREAM_IP], ttl=300)
        policies = tmp / "policies"
        policies.mkdir()
        shutil.copy(test_ca.path, policies / "upstream-ca.pem")
        write_policy(policies, f"""
            settings:
              dns: {{nameservers: ["{dns.address}"], timeout: 2}}
              networks: {{allow: ["{UPSTREAM_IP}/32"]}}
              upstream_ca: upstream-ca.pem
              # One audit line per request, however many denials a property test makes (the
              # flood budget that would fold repeats is tested in test_audit_flood.py).
              audit: {{log_allowed: {"true" if log_allowed else "false"}, budget: 1000000}}
            skills:
              {SKILL}:
                allow:
                  - host: api.req.test
                    ports: [{tls.port}]
                    methods: [GET, HEAD]
                    paths: ["/v1/invoices", "/v1/invoices/*"]
                    credential: key
                  - host: open.req.test
                    ports: [{tls.port}]
                    credential: key
                  - host: h2.req.test
                    ports: [{h2up.port}]
                    methods: [GET, HEAD]
                    paths: ["/v1/invoices", "/v1/invoices/*"]
                    credential: key
                  - host: h2open.req.test
                    ports: [{h2up.port}]
                    credential: key
                  - host: plain.req.test
                    ports: [{plain.port}]
                    methods: [GET]
                    paths: ["/v1/invoices", "/v1/invoices/*"]
                  - host: plainopen.req.test
                    ports: [{plain.port}]
                credentials:
                  key:
                    secret: "file:{key_file}"
                    placeholder: {PLACEHOLDER}
            """)
        with run_proxy(policies, tmp / "data", [SKILL]) as proxy:
            bundle = tmp / "bundle.pem"
            egress_ca = (tmp / "data" / "ca" / "mitmproxy-ca-cert.pem").read_text()
            bundle.write_text(egress_ca + Path(test_ca.path).read_text())
            yield ReqWorld(proxy, tls, h2up, plain, str(bundle))


# -- clients ---------------------------------------------------------------------------------

def open_tunnel(w: ReqWorld, host: str, port: int | None = None) -> socket.socket:
    port = port or w.port_of(host)
    raw = socket.create_connection(w.proxy_addr, timeout=10)
    raw.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Proxy-Authorization: {w.auth()}\r\n\r\n".encode())
    answer = read_response(raw, head_only=True)
    assert answer.status == 200, answer
    return raw


def tls_tunnel(w: ReqWorld, host: str, *, alpn: list[str]) -> ssl.SSLSocket:
    raw = open_tunnel(w, host)
    ctx = ssl.create_default_context(cafile=w.bundle)
    ctx.set_alpn_protocols(alpn)
    return ctx.wrap_socket(raw, server_hostname=host)


def h1_in_tunnel(w: ReqWorld, host: str, head: bytes) -> RawResponse | None:
    """Send one raw HTTP/1.1 request head inside an intercepted tunnel to `host`.
    None: egress closed the connection without an HTTP answer."""
    with tls_tunnel(w, host, alpn=["http/1.1"]) as s:
        s.sendall(head)
        try:
            return read_response(s)
        except (ConnectionError, ssl.SSLError, OSError):
            return None


def h1_plain(w: ReqWorld, head: bytes) -> RawResponse | None:
    """Send one raw request head to the proxy port (plain HTTP proxying)."""
    with socket.create_connection(w.proxy_addr, timeout=10) as s:
        s.sendall(head)
        try:
            return read_response(s)
        except (ConnectionError, OSError):
            return None


@dataclass
class H2Answer:
    status: int | None  # None: no response headers (stream reset or connection closed)
    headers: dict[bytes, bytes]
    body: bytes
    reset: bool  # the stream was reset or the connection terminated

    def json(self) -> Any:
        import json
        return json.loads(self.body)


def h2_in_tunnel(w: ReqWorld, host: str, headers: list[tuple[bytes, bytes]],
                 *, timeout: float = 10.0) -> H2Answer:
    """Send one HTTP/2 request (header block exactly as given, no validation) to `host`."""
    with tls_tunnel(w, host, alpn=["h2"]) as s:
        assert s.selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=False))
        conn.initiate_connection()
        conn.send_headers(1, headers, end_stream=True)
        s.sendall(conn.data_to_send())
        status: int | None = None
        got: dict[bytes, bytes] = {}
        body = b""
        deadline = time.monotonic() + timeout
        s.settimeout(timeout)
        while time.monotonic() < deadline:
            try:
                data = s.recv(65536)
            except (ConnectionError, ssl.SSLError, OSError, TimeoutError):
                return H2Answer(status, got, body, True)
            if not data:
                return H2Answer(status, got, body, True)
            try:
                events = conn.receive_data(data)
            except h2.exceptions.H2Error:
                return H2Answer(status, got, body, True)
            for event in events:
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == 1:
                    got = {bytes(k): bytes(v) for k, v in event.headers}
                    status = int(got[b":status"])
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == 1:
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == 1:
                    return H2Answer(status, got, body, False)
                elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    return H2Answer(status, got, body, True)
            s.sendall(conn.data_to_send())
        raise TimeoutError("no HTTP/2 answer")


def h2_head(host: str, port: int, path: bytes, *, method: bytes = b"GET",
            extra: list[tuple[bytes, bytes]] | None = None) -> list[tuple[bytes, bytes]]:
    return [(b":method", method), (b":scheme", b"https"),
            (b":authority", f"{host}:{port}".encode()), (b":path", path),
            (b"authorization", f"Bearer {PLACEHOLDER}".encode()), *(extra or [])]


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())
