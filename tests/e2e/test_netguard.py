"""End to end: the address actually dialled is vetted, whatever the name or spelling.

Every denied case has a CountingListener on the denied address and port: the test proves not
only the 403/502 and the audit line, but that no TCP connection ever reached the address.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.clients import basic, connect
from tests.conftest import UPSTREAM_IP
from tests.dnsserver import DnsServer
from tests.proxy import Proxy, run_proxy
from tests.upstream import CountingListener, Upstream, free_port, run_upstream


@dataclass
class GuardWorld:
    proxy: Proxy
    plain: Upstream
    dns: DnsServer
    trap: CountingListener  # 127.0.0.1 on the upstream's port: must never see a connection

    def get(self, host: str, path: str = "/echo") -> httpx.Response:
        with httpx.Client(proxy=self.proxy.url("scout"), timeout=15, trust_env=False) as c:
            return c.get(f"http://{host}:{self.plain.port}{path}")


NAMES: dict[str, list[str]] = {
    "good.test": [UPSTREAM_IP],
    "loop.test": ["127.0.0.1"],
    "meta.test": ["169.254.169.254"],
    "private.test": ["10.0.0.5"],
    "mixed.test": [UPSTREAM_IP, "127.0.0.1"],
    "mapped.test": ["::ffff:127.0.0.1"],
    "nat64.test": ["64:ff9b::7f00:1"],
    "sixtofour.test": ["2002:7f00:1::1"],
    "v6loop.test": ["::1"],
}


@pytest.fixture(scope="module")
def gw(proxy_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardWorld]:
    tmp = tmp_path_factory.mktemp("guard")
    with DnsServer() as dns, run_upstream(UPSTREAM_IP, ca=None, names=[], tmp=str(tmp)) as plain:
        trap = CountingListener("127.0.0.1", plain.port)
        try:
            for name, addresses in NAMES.items():
                dns.set(name, addresses, ttl=300)
            dns.set_sequence("rebind.test", [[UPSTREAM_IP], ["127.0.0.1"]], ttl=0)
            dns.set_rcode("servfail.test", "SERVFAIL")
            dns.set_silent("silent.test")
            port = plain.port
            hosts = [*NAMES, "rebind.test", "nx.test", "servfail.test", "silent.test",
                     "127.0.0.1", UPSTREAM_IP, "169.254.169.254", "::1", "::ffff:127.0.0.1"]
            rules = "".join(f"      - host: \"{h}\"\n        ports: [{port}, 80]\n" for h in hosts)
            policies = tmp / "policies"
            policies.mkdir()
            (policies / "policy.yaml").write_text(
                "settings:\n"
                f"  dns: {{nameservers: [\"{dns.address}\"], timeout: 1, min_ttl: 5}}\n"
                f"  networks: {{allow: [\"{UPSTREAM_IP}/32\", \"169.254.169.254/32\"]}}\n"
                "skills:\n  scout:\n    allow:\n" + rules)
            with run_proxy(policies, tmp / "data", ["scout"]) as proxy:
                yield GuardWorld(proxy, plain, dns, trap)
        finally:
            trap.close()


def test_good_name_reaches_the_allowed_address(gw: GuardWorld) -> None:
    resp = gw.get("good.test")
    assert resp.status_code == 200
    assert resp.json()["path"] == "/echo"


def test_ip_literal_named_by_a_rule_in_an_allowed_network(gw: GuardWorld) -> None:
    assert gw.get(UPSTREAM_IP).status_code == 200


@pytest.mark.parametrize("host, status, reason, detail", [
    pytest.param("loop.test", 403, "blocked_address", "loopback", id="name resolving to loopback"),
    pytest.param("meta.test", 403, "blocked_address", "metadata", id="metadata even when networks.allow covers it"),
    pytest.param("private.test", 403, "blocked_address", "10.0.0.5", id="name resolving to RFC 1918"),
    pytest.param("mixed.test", 403, "blocked_address", "127.0.0.1", id="one bad address blocks the whole answer"),
    pytest.param("mapped.test", 403, "blocked_address", "denied IPv4 address 127.0.0.1", id="IPv4-mapped loopback"),
    pytest.param("nat64.test", 403, "blocked_address", "64:ff9b::7f00:1", id="NAT64 form of loopback"),
    pytest.param("sixtofour.test", 403, "blocked_address", "2002:7f00:1::1", id="6to4 form of loopback"),
    pytest.param("v6loop.test", 403, "blocked_address", "::1", id="IPv6 loopback"),
    pytest.param("nx.test", 502, "dns_failure", "NXDOMAIN", id="NXDOMAIN"),
    pytest.param("servfail.test", 502, "dns_failure", "SERVFAIL", id="SERVFAIL"),
    pytest.param("silent.test", 502, "dns_failure", "timed out", id="DNS never answers"),
])
def test_bad_destinations_are_refused_before_any_connection(
        gw: GuardWorld, host: str, status: int, reason: str, detail: str) -> None:
    before = gw.trap.accepted
    resp = gw.get(host)
    assert resp.status_code == status
    body = resp.json()
    assert body["reason"] == reason
    record = gw.proxy.audit_for(body["request_id"])
    assert (record["decision"], record["reason"], record["host"]) == ("deny", reason, host)
    assert detail in record["detail"]
    assert gw.trap.accepted == before == 0


@pytest.mark.parametrize("spelling", [
    pytest.param("127.0.0.1", id="dotted"),
    pytest.param("2130706433", id="decimal"),
    pytest.param("0x7f.1", id="hex short form"),
    pytest.param("0x7f000001", id="hex"),
    pytest.param("0177.0.0.1", id="octal"),
    pytest.param("127.1", id="short form"),
    pytest.param("[::1]", id="IPv6 loopback in brackets"),
    pytest.param("[::ffff:127.0.0.1]", id="IPv4-mapped in brackets"),
    pytest.param("[::ffff:7f00:1]", id="IPv4-mapped in hex"),
])
def test_every_spelling_of_loopback_is_refused(gw: GuardWorld, spelling: str) -> None:
    scout = basic("scout", gw.proxy.tokens["scout"])
    resp = connect((gw.proxy.host, gw.proxy.port), f"{spelling}:{gw.plain.port}", scout)
    assert resp.status == 403, resp.body
    assert resp.json()["reason"] == "blocked_address"
    assert gw.trap.accepted == 0


def test_metadata_literal_is_refused(gw: GuardWorld) -> None:
    scout = basic("scout", gw.proxy.tokens["scout"])
    resp = connect((gw.proxy.host, gw.proxy.port), "169.254.169.254:80", scout)
    assert resp.status == 403
    assert resp.json()["reason"] == "blocked_address"


def test_rebinding_cannot_redirect_the_connection(gw: GuardWorld) -> None:
    # The DNS server answers 127.0.0.2 first and 127.0.0.1 afterwards. Every request either
    # reaches the vetted upstream or is refused; none reaches 127.0.0.1.
    statuses = [gw.get("rebind.test").status_code for _ in range(3)]
    assert statuses[0] == 200
    assert set(statuses) <= {200, 403}
    assert gw.trap.accepted == 0


def test_proxy_itself_is_never_a_destination(gw: GuardWorld) -> None:
    scout = basic("scout", gw.proxy.tokens["scout"])
    resp = connect((gw.proxy.host, gw.proxy.port), f"127.0.0.1:{gw.proxy.port}", scout)
    assert resp.status == 403


def test_egress_own_addresses_stay_refused_even_when_loopback_is_opened(tmp_path: Path) -> None:
    """Loop protection: with 127.0.0.1 opened by networks.allow and named by a rule, the
    proxy port and the admin port are still refused (egress itself is never a destination)."""
    proxy_port, admin_port = free_port(), free_port()
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(
        "settings:\n  networks: {allow: [\"127.0.0.1/32\"]}\n"
        f"skills:\n  s:\n    allow: [{{host: 127.0.0.1, ports: [{proxy_port}, {admin_port}]}}]\n")
    with run_proxy(policies, tmp_path / "data", ["s"], port=proxy_port,
                   args=["--admin", f"127.0.0.1:{admin_port}"]) as proxy:
        auth = basic("s", proxy.tokens["s"])
        for port in (proxy_port, admin_port):
            resp = connect((proxy.host, proxy.port), f"127.0.0.1:{port}", auth)
            assert resp.status == 403, port
            record = proxy.audit_for(resp.request_id)
            assert record["reason"] == "blocked_address"
            assert "egress" in record["detail"], record["detail"]
