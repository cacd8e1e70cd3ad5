"""DnsResolver against a real dnspython DNS server on 127.0.0.1 (tests/dnsserver.py)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from egress.errors import ResolveError
from egress.netguard import DnsResolver
from egress.policy.hosts import parse_nameserver
from tests.dnsserver import (  # noqa: F401  (dns_server is a fixture)
    ALIAS,
    ALLOWED,
    MISSING,
    NODATA,
    SERVFAIL,
    SILENT,
    DnsServer,
    dns_server,
)
from tests.fakes import FakeClock

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


async def test_resolves_a_and_aaaa_in_one_lookup(dns_server: DnsServer) -> None:
    dns_server.set("dual.egress.test", ["127.0.0.2", "::1"])
    resolver = DnsResolver([dns_server.address])
    assert await resolver.resolve("dual.egress.test") == (V4("127.0.0.2"), V6("::1"))
    assert (dns_server.count("dual.egress.test", "A"), dns_server.count("dual.egress.test", "AAAA")) == (1, 1)


async def test_follows_cnames(dns_server: DnsServer) -> None:
    resolver = DnsResolver([dns_server.address])
    assert await resolver.resolve(ALIAS) == (V4("127.0.0.1"),)


async def test_large_answers_fall_back_to_tcp(dns_server: DnsServer) -> None:
    addresses = [f"198.51.{i // 256}.{i % 256}" for i in range(300)]  # > 4 KB: truncated over UDP
    dns_server.set("big.egress.test", addresses)
    resolver = DnsResolver([dns_server.address])
    assert set(await resolver.resolve("big.egress.test")) == {V4(a) for a in addresses}
    assert ("big.egress.test", "A", "tcp") in dns_server.log


async def test_a_name_is_looked_up_case_insensitively_and_without_the_trailing_dot(dns_server: DnsServer) -> None:
    resolver = DnsResolver([dns_server.address])
    await resolver.resolve(ALLOWED)
    await resolver.resolve(ALLOWED.upper() + ".")
    assert dns_server.count(ALLOWED, "A") == 1


@pytest.mark.parametrize(
    "name, detail",
    [
        pytest.param(MISSING, "NXDOMAIN", id="NXDOMAIN"),
        pytest.param(SERVFAIL, "SERVFAIL", id="SERVFAIL"),
        pytest.param(NODATA, "no A/AAAA records", id="name without addresses"),
        pytest.param(SILENT, "timed out after 0.5s", id="server never answers"),
        pytest.param("refused.egress.test", "REFUSED", id="REFUSED"),
        pytest.param("a..b", "not a valid DNS name", id="empty label"),
        pytest.param("x" * 64 + ".egress.test", "not a valid DNS name", id="label over 63 octets"),
    ],
)
async def test_failures_raise_resolve_error_with_a_short_detail(dns_server: DnsServer, name: str, detail: str) -> None:
    dns_server.set_rcode("refused.egress.test", "REFUSED")
    resolver = DnsResolver([dns_server.address], timeout=0.5)
    with pytest.raises(ResolveError) as caught:
        await resolver.resolve(name)
    assert (caught.value.host, caught.value.detail) == (name, detail)
    assert str(caught.value) == f"cannot resolve {name}: {detail}"
    assert resolver.failures == 1


async def test_an_unreachable_nameserver_times_out() -> None:
    # A port that was free a moment ago. dnspython's UDP socket is unconnected, so the
    # kernel's "port unreachable" never reaches it: the lookup runs out its lifetime.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    resolver = DnsResolver([f"127.0.0.1:{closed_port}"], timeout=0.5)
    with pytest.raises(ResolveError) as caught:
        await resolver.resolve(ALLOWED)
    assert caught.value.detail == "timed out after 0.5s"


@pytest.mark.parametrize(
    "answer_ttl, min_ttl, max_ttl, cached_until",
    [
        pytest.param(60, 5, 300, 60, id="the answer's TTL is honoured"),
        pytest.param(0, 5, 300, 5, id="a TTL below the floor is raised to min_ttl"),
        pytest.param(3600, 5, 300, 300, id="a TTL above the ceiling is cut to max_ttl"),
    ],
)
async def test_cache_honours_ttl_within_floor_and_ceiling(
    dns_server: DnsServer, answer_ttl: int, min_ttl: int, max_ttl: int, cached_until: int
) -> None:
    name = "ttl.egress.test"
    dns_server.set(name, ["127.0.0.2"], ttl=answer_ttl)
    clock = FakeClock()
    resolver = DnsResolver([dns_server.address], min_ttl=min_ttl, max_ttl=max_ttl, clock=clock)
    assert await resolver.resolve(name) == (V4("127.0.0.2"),)
    dns_server.set(name, ["127.0.0.3"], ttl=answer_ttl)

    clock.advance(cached_until - 0.1)
    assert await resolver.resolve(name) == (V4("127.0.0.2"),)
    assert dns_server.count(name, "A") == 1

    clock.advance(0.2)
    assert await resolver.resolve(name) == (V4("127.0.0.3"),)
    assert dns_server.count(name, "A") == 2
    assert (resolver.lookups, resolver.cache_hits) == (2, 1)


async def test_negative_answers_are_cached_for_min_ttl(dns_server: DnsServer) -> None:
    clock = FakeClock()
    resolver = DnsResolver([dns_server.address], min_ttl=5, clock=clock)
    for _ in range(3):
        with pytest.raises(ResolveError):
            await resolver.resolve(MISSING)
    assert dns_server.count(MISSING, "A") == 1

    dns_server.set(MISSING, ["127.0.0.2"])
    clock.advance(5.1)
    assert await resolver.resolve(MISSING) == (V4("127.0.0.2"),)
    assert dns_server.count(MISSING, "A") == 2
    assert (resolver.lookups, resolver.failures, resolver.cache_hits) == (2, 1, 2)


async def test_concurrent_lookups_of_one_name_share_one_query(dns_server: DnsServer) -> None:
    resolver = DnsResolver([dns_server.address])
    results = await asyncio.gather(*(resolver.resolve(ALLOWED) for _ in range(20)))
    assert set(results) == {(V4("127.0.0.2"),)}
    assert (dns_server.count(ALLOWED, "A"), dns_server.count(ALLOWED, "AAAA")) == (1, 1)
    assert (resolver.lookups, resolver.coalesced) == (1, 19)


async def test_one_caller_giving_up_does_not_cancel_the_shared_lookup(dns_server: DnsServer) -> None:
    resolver = DnsResolver([dns_server.address], timeout=0.3)
    first = asyncio.create_task(resolver.resolve(SILENT))
    second = asyncio.create_task(resolver.resolve(SILENT))
    await asyncio.sleep(0)  # both are now waiting on the same lookup
    first.cancel()
    with pytest.raises(ResolveError) as caught:
        await second
    assert caught.value.detail == "timed out after 0.3s"
    assert first.cancelled()


async def test_concurrency_is_bounded(dns_server: DnsServer) -> None:
    resolver = DnsResolver([dns_server.address], timeout=0.3, max_concurrency=1)
    slow = asyncio.create_task(resolver.resolve(SILENT))
    fast = asyncio.create_task(resolver.resolve(ALLOWED))
    done = await asyncio.gather(slow, fast, return_exceptions=True)
    assert isinstance(done[0], ResolveError)
    assert done[1] == (V4("127.0.0.2"),)
    names = [name for name, _, _ in dns_server.log]
    # With one slot, the second lookup only starts once the first has given up.
    assert names.index(ALLOWED) > max(i for i, n in enumerate(names) if n == SILENT)


async def test_the_cache_is_bounded(dns_server: DnsServer) -> None:
    resolver = DnsResolver([dns_server.address], max_entries=2)
    for i in range(3):
        dns_server.set(f"n{i}.egress.test", ["127.0.0.2"])
        await resolver.resolve(f"n{i}.egress.test")
    await resolver.resolve("n0.egress.test")  # the oldest entry was dropped
    await resolver.resolve("n2.egress.test")  # the newest was kept
    assert (dns_server.count("n0.egress.test", "A"), dns_server.count("n2.egress.test", "A")) == (2, 1)


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("1.2.3.4", ("1.2.3.4", 53), id="IPv4, default port"),
        pytest.param("127.0.0.1:5353", ("127.0.0.1", 5353), id="IPv4 with port"),
        pytest.param("::1", ("::1", 53), id="bare IPv6"),
        pytest.param("[::1]", ("::1", 53), id="bracketed IPv6"),
        pytest.param("[::1]:5353", ("::1", 5353), id="bracketed IPv6 with port"),
    ],
)
def test_parse_nameserver(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param("dns.example:53", "nameserver 'dns.example:53' must be an IP address, optionally with :port", id="name"),
        pytest.param("1.2.3.4:0", "nameserver '1.2.3.4:0': the port must be a number from 1 to 65535", id="port 0"),
        pytest.param("1.2.3.4:65536", "nameserver '1.2.3.4:65536': the port must be a number from 1 to 65535", id="port too big"),
        pytest.param("1.2.3.4:", "nameserver '1.2.3.4:': the port is missing after ':'", id="empty port"),
        pytest.param("[::1]5353", "nameserver '[::1]5353': write [IPv6]:port, e.g. [::1]:5353", id="no colon"),
        pytest.param("[::1", "nameserver '[::1': write [IPv6]:port, e.g. [::1]:5353", id="no bracket"),
    ],
)
def test_parse_nameserver_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        DnsResolver([text])
    assert str(caught.value) == message


def test_nameservers_must_be_a_sequence_of_strings() -> None:
    with pytest.raises(TypeError):
        DnsResolver("127.0.0.1")


def test_the_constructor_reads_nothing() -> None:
    resolver = DnsResolver()  # would read /etc/resolv.conf if it configured itself here
    assert resolver._dns is None
    assert repr(resolver) == "DnsResolver(system, timeout=3.0s)"
