"""egress as the proxy `openclaw proxy validate` checks, with the policy the import writes.

`openclaw proxy validate` sends one request that must succeed and one to a loopback canary
(a server of its own with a per-run token) that must not: it passes when the proxy answers
non-2xx without the canary's token, or the transport fails; a response carrying the token
fails it. Operators add `--denied-url` targets (metadata, private addresses) the same way.
This test plays the validator against the shared-gateway identity `openclaw` from
`egress openclaw import --gateway openclaw`: report mode, so the policy refuses nothing and
only the address check stands between OpenClaw and the canary. Every canary counts its
connections: none may arrive.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from egress.cli.main import main
from tests.clients import basic, connect
from tests.conftest import UPSTREAM_IP
from tests.dnsserver import DnsServer
from tests.openclaw.conftest import fake_keys, write_home
from tests.proxy import Proxy, run_proxy
from tests.upstream import CountingListener, Upstream, run_upstream


class Canary:
    """A loopback HTTP server that answers 200 with a per-run token, counting requests."""

    def __init__(self, host: str) -> None:
        self.token = secrets.token_hex(16)
        self.hits = 0
        canary = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 -- http.server's naming
                canary.hits += 1
                body = canary.token.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.host, self.port = host, int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@dataclass
class Validator:
    proxy: Proxy
    plain: Upstream
    canary: Canary
    trap: CountingListener  # 127.0.0.5: loopback too, reached through a DNS name

    def get(self, url: str) -> httpx.Response:
        with httpx.Client(proxy=self.proxy.url("openclaw"), timeout=15, trust_env=False) as c:
            return c.get(url)


@pytest.fixture(scope="module")
def validator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Validator]:
    tmp = tmp_path_factory.mktemp("validate")
    config = write_home(tmp / "home", fake_keys())
    policies, data = tmp / "policies", tmp / "data"
    mp = pytest.MonkeyPatch()
    mp.setenv("HOME", str(tmp / "home"))
    try:
        assert main(["openclaw", "import", "--config", str(config), "--policies", str(policies),
                     "--data-dir", str(data), "--gateway", "openclaw"]) == 0
    finally:
        mp.undo()
    canary = Canary("127.0.0.1")
    trap = CountingListener("127.0.0.5")
    try:
        with DnsServer() as dns, run_upstream(UPSTREAM_IP, ca=None, names=[],
                                              tmp=str(tmp)) as plain:
            dns.set("example.claw.test", [UPSTREAM_IP])
            dns.set("loopback.claw.test", ["127.0.0.5"])
            dns.set("internal.claw.test", ["10.0.0.1"])
            dns.set("metadata.claw.test", ["169.254.169.254"])
            (policies / "settings.yaml").write_text(
                "settings:\n"
                f"  dns: {{nameservers: [\"{dns.address}\"], timeout: 2}}\n"
                f"  networks: {{allow: [\"{UPSTREAM_IP}/32\"]}}\n")
            with run_proxy(policies, data, ["openclaw"], args=["--admin", "off"]) as proxy:
                yield Validator(proxy, plain, canary, trap)
    finally:
        canary.close()
        trap.close()


def test_the_imported_gateway_policy_is_in_report_mode(validator: Validator) -> None:
    text = (validator.proxy.policies / "openclaw-openclaw.yaml").read_text()
    assert "    mode: report\n" in text


def test_allowed_check_succeeds(validator: Validator) -> None:
    resp = validator.get(f"http://example.claw.test:{validator.plain.port}/")
    assert resp.status_code == 200


def test_loopback_canary_is_refused_without_reaching_it(validator: Validator) -> None:
    canary = validator.canary
    resp = validator.get(f"http://127.0.0.1:{canary.port}/{canary.token}")
    assert resp.status_code == 403  # non-2xx: what the validator requires
    assert canary.token not in resp.text  # the canary's answer never comes back
    body = resp.json()
    assert body["reason"] == "blocked_address"
    record = validator.proxy.audit_for(body["request_id"])
    assert (record["skill"], record["decision"]) == ("openclaw", "deny")
    assert "resolved" not in record
    assert canary.hits == 0


@pytest.mark.parametrize("host, status, reason", [
    pytest.param("127.0.0.1", 403, "blocked_address", id="loopback literal"),
    pytest.param("[::ffff:127.0.0.1]", 403, "blocked_address", id="loopback as IPv4-mapped IPv6"),
    # RFC 6761: localhost names are refused as loopback without asking any nameserver.
    pytest.param("localhost", 403, "blocked_address", id="localhost is refused without a lookup"),
])
def test_loopback_canary_tunnel_is_refused(validator: Validator, host: str, status: int,
                                           reason: str) -> None:
    canary = validator.canary
    resp = connect((validator.proxy.host, validator.proxy.port), f"{host}:{canary.port}",
                   basic("openclaw", validator.proxy.tokens["openclaw"]))
    assert (resp.status, resp.json()["reason"]) == (status, reason)
    assert canary.token.encode() not in resp.body
    assert canary.hits == 0


@pytest.mark.parametrize("url, detail", [
    pytest.param("http://loopback.claw.test:{trap}/", "127.0.0.5",
                 id="name resolving to loopback (egress resolves DNS itself)"),
    pytest.param("http://internal.claw.test/", "10.0.0.1", id="name resolving to a private address"),
    pytest.param("http://metadata.claw.test/", "169.254.169.254", id="name resolving to metadata"),
    pytest.param("http://169.254.169.254/latest/meta-data/", "169.254.169.254",
                 id="metadata literal"),
])
def test_denied_urls_are_refused_before_any_connection(validator: Validator, url: str,
                                                        detail: str) -> None:
    resp = validator.get(url.format(trap=validator.trap.port))
    assert resp.status_code == 403
    body = resp.json()
    assert body["reason"] == "blocked_address"
    record = validator.proxy.audit_for(body["request_id"])
    assert detail in record["detail"]
    assert "resolved" not in record
    assert validator.trap.accepted == 0


def test_nothing_reached_any_canary(validator: Validator) -> None:
    assert (validator.canary.hits, validator.trap.accepted) == (0, 0)
    assert Path(validator.proxy.audit_path).exists()
