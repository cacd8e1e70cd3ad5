"""AddressGuard against a real dnspython DNS server on 127.0.0.1 (tests/dnsserver.py)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

import egress.netguard
from egress.netguard import (
    AddressGuard,
    Blocked,
    DnsResolver,
    Vetted,
    local_interface_addresses,
)
from egress.policy.addresses import NetworkPolicy, parse_network
from egress.policy.hosts import IPAddress
from tests.dnsserver import (  # noqa: F401  (dns_server is a fixture)
    ALIAS,
    ALLOWED,
    LOOPBACK,
    MAPPED,
    METADATA,
    MISSING,
    MIXED,
    NAT64,
    NODATA,
    REBIND,
    SERVFAIL,
    SILENT,
    SIXTOFOUR,
    TEREDO,
    DnsServer,
    dns_server,
)
from tests.fakes import FakeClock
from tests.fakes import FakeResolver

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
# As in the end-to-end tests: upstreams listen on 127.0.0.2, the rest of loopback stays denied.
TEST_NETWORKS = NetworkPolicy(allow=(parse_network("127.0.0.2/32"),))


def make_guard(server: DnsServer, networks: NetworkPolicy = TEST_NETWORKS, **kwargs: object) -> AddressGuard:
    return AddressGuard(DnsResolver([server.address], timeout=0.5), networks, **kwargs)  # type: ignore[arg-type]


def blocked(detail: str, *addresses: str) -> Blocked:
    return Blocked("blocked_address", detail, tuple(ipaddress.ip_address(a) for a in addresses))


@pytest.mark.parametrize(
    "host, expected",
    [
        pytest.param(ALLOWED, Vetted(ALLOWED, 443, V4("127.0.0.2")), id="name on the allowed test address"),
        pytest.param(
            LOOPBACK, blocked(f"{LOOPBACK} resolves to 127.0.0.1, which is loopback", "127.0.0.1"),
            id="name on 127.0.0.1",
        ),
        pytest.param(
            METADATA,
            blocked(f"{METADATA} resolves to 169.254.169.254, which is a cloud metadata address", "169.254.169.254"),
            id="name on the metadata address",
        ),
        pytest.param(
            ALIAS, blocked(f"{ALIAS} resolves to 127.0.0.1, which is loopback", "127.0.0.1"),
            id="CNAME to a loopback name",
        ),
        pytest.param(
            MAPPED,
            blocked(
                f"{MAPPED} resolves to {V6('::ffff:127.0.0.1')}, "
                "which is an IPv6 form of the denied IPv4 address 127.0.0.1",
                "::ffff:127.0.0.1",
            ),
            id="IPv4-mapped loopback",
        ),
        pytest.param(
            NAT64,
            blocked(
                f"{NAT64} resolves to 64:ff9b::7f00:1, which is an IPv6 form of the denied IPv4 address 127.0.0.1",
                "64:ff9b::7f00:1",
            ),
            id="NAT64 loopback",
        ),
        pytest.param(
            SIXTOFOUR,
            blocked(
                f"{SIXTOFOUR} resolves to 2002:7f00:1::1, which is an IPv6 form of the denied IPv4 address 127.0.0.1",
                "2002:7f00:1::1",
            ),
            id="6to4 loopback",
        ),
        pytest.param(
            TEREDO,
            blocked(
                f"{TEREDO} resolves to 2001:0:4136:e378:8000:63bf:80ff:fffe, "
                "which is an IPv6 form of the denied IPv4 address 127.0.0.1",
                "2001:0:4136:e378:8000:63bf:80ff:fffe",
            ),
            id="Teredo loopback",
        ),
        pytest.param(MISSING, Blocked("dns_failure", "NXDOMAIN"), id="NXDOMAIN"),
        pytest.param(SERVFAIL, Blocked("dns_failure", "SERVFAIL"), id="SERVFAIL"),
        pytest.param(NODATA, Blocked("dns_failure", "no A/AAAA records"), id="no addresses"),
        pytest.param(SILENT, Blocked("dns_failure", "timed out after 0.5s"), id="server never answers"),
        pytest.param("localhost", Blocked("blocked_address", "localhost is a loopback name"),
                     id="localhost is refused without asking DNS"),
        pytest.param("api.localhost", Blocked("blocked_address", "api.localhost is a loopback name"),
                     id="names under localhost too"),
    ],
)
async def test_vet_names(dns_server: DnsServer, host: str, expected: Vetted | Blocked) -> None:
    guard = make_guard(dns_server)
    assert await guard.vet(host, 443) == expected
    if host.endswith("localhost"):
        assert dns_server.count(host, "A") == 0
    if isinstance(expected, Blocked):
        assert not any(guard.was_vetted(ip, 443) for ip in expected.addresses)


async def test_a_mixed_answer_blocks_the_whole_name(dns_server: DnsServer) -> None:
    guard = make_guard(dns_server)
    result = await guard.vet(MIXED, 443)
    assert isinstance(result, Blocked)
    assert (result.reason, result.detail) == (
        "blocked_address",
        f"{MIXED} resolves to 127.0.0.1, which is loopback (one denied address blocks the whole answer)",
    )
    assert set(result.addresses) == {V4("127.0.0.2"), V4("127.0.0.1")}
    assert not guard.was_vetted(V4("127.0.0.2"), 443)


@pytest.mark.parametrize(
    "host, expected",
    [
        pytest.param("127.0.0.2", Vetted("127.0.0.2", 443, V4("127.0.0.2")), id="allowed literal"),
        pytest.param("0x7f.0.0.2", Vetted("0x7f.0.0.2", 443, V4("127.0.0.2")), id="allowed literal in hex"),
        pytest.param("127.0.0.1", blocked("127.0.0.1 is loopback", "127.0.0.1"), id="loopback literal"),
        pytest.param("0x7f.1", blocked("127.0.0.1 is loopback", "127.0.0.1"), id="loopback in hex short form"),
        pytest.param("2130706433", blocked("127.0.0.1 is loopback", "127.0.0.1"), id="loopback as a number"),
        pytest.param("[::1]", blocked("::1 is loopback", "::1"), id="bracketed IPv6 loopback"),
        pytest.param(
            "[fe80::1%25eth0]", blocked("fe80::1%eth0 is link-local", "fe80::1%eth0"), id="link-local with zone id"
        ),
        pytest.param(
            "1.2.3.4.5", Blocked("blocked_address", "1.2.3.4.5 looks like an IPv4 address but is not a valid one"),
            id="neither address nor name",
        ),
    ],
)
async def test_vet_literals_without_dns(dns_server: DnsServer, host: str, expected: Vetted | Blocked) -> None:
    guard = make_guard(dns_server)
    assert await guard.vet(host, 443) == expected
    assert sum(dns_server.queries.values()) == 0


async def test_metadata_stays_blocked_when_every_network_is_allowed(dns_server: DnsServer) -> None:
    guard = make_guard(dns_server, NetworkPolicy(allow=(parse_network("0.0.0.0/0"), parse_network("::/0"))))
    assert await guard.vet("169.254.169.254", 80) == blocked(
        "169.254.169.254 is a cloud metadata address", "169.254.169.254"
    )
    assert await guard.vet(METADATA, 80) == blocked(
        f"{METADATA} resolves to 169.254.169.254, which is a cloud metadata address", "169.254.169.254"
    )
    assert await guard.vet(LOOPBACK, 80) == Vetted(LOOPBACK, 80, V4("127.0.0.1"))


async def test_rebinding_within_the_ttl_keeps_the_pinned_address(dns_server: DnsServer) -> None:
    clock = FakeClock()
    resolver = DnsResolver([dns_server.address], min_ttl=5, clock=clock)
    guard = AddressGuard(resolver, TEST_NETWORKS)
    first = await guard.vet(REBIND, 443)
    clock.advance(4)
    second = await guard.vet(REBIND, 443)
    assert first == second == Vetted(REBIND, 443, V4("127.0.0.2"))
    assert dns_server.count(REBIND, "A") == 1

    clock.advance(2)  # past the floor: the next answer is the rebound one, and it is refused
    assert await guard.vet(REBIND, 443) == blocked(f"{REBIND} resolves to 127.0.0.1, which is loopback", "127.0.0.1")
    assert dns_server.count(REBIND, "A") == 2


async def test_without_a_cache_floor_every_fresh_answer_is_checked(dns_server: DnsServer) -> None:
    guard = AddressGuard(DnsResolver([dns_server.address], min_ttl=0, max_ttl=0), TEST_NETWORKS)
    assert await guard.vet(REBIND, 443) == Vetted(REBIND, 443, V4("127.0.0.2"))
    assert await guard.vet(REBIND, 443) == blocked(f"{REBIND} resolves to 127.0.0.1, which is loopback", "127.0.0.1")


@pytest.mark.parametrize(
    "addresses, chosen",
    [
        pytest.param(["fd00:1::2", "127.0.0.2"], V4("127.0.0.2"), id="IPv4 preferred"),
        pytest.param(["fd00:1::2"], V6("fd00:1::2"), id="IPv6 when there is no IPv4"),
    ],
)
async def test_vet_picks_one_address(dns_server: DnsServer, addresses: list[str], chosen: IPAddress) -> None:
    dns_server.set("dual.egress.test", addresses)
    networks = NetworkPolicy(allow=(parse_network("127.0.0.2/32"), parse_network("fd00:1::/64")))
    guard = make_guard(dns_server, networks)
    assert await guard.vet("dual.egress.test", 443) == Vetted("dual.egress.test", 443, chosen)


async def test_egress_itself_is_refused(dns_server: DnsServer) -> None:
    networks = NetworkPolicy(
        allow=(parse_network("127.0.0.2/32"),), self_addresses=frozenset({(V4("127.0.0.2"), 8080)})
    )
    guard = make_guard(dns_server, networks)
    assert await guard.vet(ALLOWED, 8080) == blocked(
        f"{ALLOWED} resolves to 127.0.0.2, which is egress itself (port 8080)", "127.0.0.2"
    )
    assert await guard.vet(ALLOWED, 443) == Vetted(ALLOWED, 443, V4("127.0.0.2"))


async def test_was_vetted_knows_only_pairs_it_handed_out(dns_server: DnsServer) -> None:
    guard = make_guard(dns_server)
    assert not guard.was_vetted(V4("127.0.0.2"), 443)
    await guard.vet(ALLOWED, 443)
    assert guard.was_vetted(V4("127.0.0.2"), 443)
    assert guard.was_vetted(V6("::ffff:127.0.0.2"), 443)  # the same destination, mapped
    assert not guard.was_vetted(V4("127.0.0.2"), 444)
    assert not guard.was_vetted(V4("127.0.0.1"), 443)


async def test_pins_expire(dns_server: DnsServer) -> None:
    clock = FakeClock()
    guard = make_guard(dns_server, pin_ttl=10.0, clock=clock)
    await guard.vet("127.0.0.2", 443)
    clock.advance(9.9)
    assert guard.was_vetted(V4("127.0.0.2"), 443)
    clock.advance(0.2)
    assert not guard.was_vetted(V4("127.0.0.2"), 443)


async def test_pins_are_bounded(dns_server: DnsServer) -> None:
    guard = make_guard(dns_server, max_pins=2)
    for port in (1001, 1002, 1003):
        await guard.vet("127.0.0.2", port)
    assert [guard.was_vetted(V4("127.0.0.2"), p) for p in (1001, 1002, 1003)] == [False, True, True]


async def test_replace_networks_applies_to_new_vets_and_old_pins(dns_server: DnsServer) -> None:
    guard = make_guard(dns_server)
    assert await guard.vet("10.0.0.5", 443) == blocked("10.0.0.5 is a private (RFC 1918) address", "10.0.0.5")
    await guard.vet(ALLOWED, 443)

    guard.replace_networks(NetworkPolicy(allow=(parse_network("10.0.0.0/8"),)))
    assert await guard.vet("10.0.0.5", 443) == Vetted("10.0.0.5", 443, V4("10.0.0.5"))
    assert guard.networks.allow == (parse_network("10.0.0.0/8"),)
    assert not guard.was_vetted(V4("127.0.0.2"), 443)  # vetted before, denied now


@pytest.mark.parametrize(
    "answer, expected",
    [
        pytest.param(RuntimeError("bug"), Blocked("dns_failure", "resolver error"), id="unexpected exception"),
        pytest.param((), Blocked("dns_failure", "no A/AAAA records"), id="empty answer"),
    ],
)
async def test_a_faulty_resolver_fails_closed(answer: Exception | tuple[IPAddress, ...], expected: Blocked) -> None:
    guard = AddressGuard(FakeResolver(answer), TEST_NETWORKS)
    assert await guard.vet("api.example.com", 443) == expected


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(("127.0.0.2", "127.0.0.1"), id="denied address last"),
        pytest.param(("127.0.0.1", "127.0.0.2"), id="denied address first"),
        pytest.param(("127.0.0.2", "fd00:1::2", "::1"), id="denied IPv6 address after good ones"),
    ],
)
async def test_any_denied_address_blocks_the_name_wherever_it_is(answer: tuple[str, ...]) -> None:
    addresses = tuple(ipaddress.ip_address(a) for a in answer)
    networks = NetworkPolicy(allow=(parse_network("127.0.0.2/32"), parse_network("fd00:1::/64")))
    result = await AddressGuard(FakeResolver(addresses), networks).vet("api.example.com", 443)
    assert isinstance(result, Blocked)
    assert (result.reason, result.addresses) == ("blocked_address", addresses)


async def test_ipv4_is_preferred_whatever_the_order() -> None:
    addresses = (V6("fd00:1::2"), V4("127.0.0.2"))
    networks = NetworkPolicy(allow=(parse_network("127.0.0.2/32"), parse_network("fd00:1::/64")))
    guard = AddressGuard(FakeResolver(addresses), networks)
    assert await guard.vet("api.example.com", 443) == Vetted("api.example.com", 443, V4("127.0.0.2"))


@pytest.mark.skipif(not Path("/proc/net/fib_trie").exists(), reason="needs Linux /proc/net")
def test_local_interface_addresses_include_loopback() -> None:
    found = local_interface_addresses()
    assert V4("127.0.0.1") in found


def test_local_interface_addresses_without_proc_is_empty(tmp_path: Path) -> None:
    assert local_interface_addresses(tmp_path) == frozenset()


def test_the_public_surface() -> None:
    assert sorted(egress.netguard.__all__) == [
        "AddressGuard", "Blocked", "DnsResolver", "Resolver", "Vetted",
        "local_interface_addresses",
    ]  # fmt: skip
