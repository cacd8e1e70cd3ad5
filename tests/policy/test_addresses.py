"""IP literal parsing (egress/policy/hosts.py) and address classification (egress/policy/addresses.py)."""

from __future__ import annotations

import ipaddress
import random
import socket

import pytest

from egress.policy.addresses import (
    LABELS,
    NetworkPolicy,
    classify,
    describe,
    embedded_ipv4,
    parse_network,
)
from egress.policy.hosts import parse_ip_literal

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
DEFAULT = NetworkPolicy()


def nets(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(parse_network(c) for c in cidrs)


# --------------------------------------------------------------------------------------------
# parse_ip_literal


@pytest.mark.parametrize(
    "host, expected",
    [
        pytest.param("127.0.0.1", V4("127.0.0.1"), id="dotted quad"),
        pytest.param("2130706433", V4("127.0.0.1"), id="one decimal number"),
        pytest.param("0x7f000001", V4("127.0.0.1"), id="one hex number"),
        pytest.param("017700000001", V4("127.0.0.1"), id="one octal number"),
        pytest.param("0x7f.1", V4("127.0.0.1"), id="hex first part, 24-bit rest"),
        pytest.param("0X7F.0.0.1", V4("127.0.0.1"), id="upper-case hex prefix"),
        pytest.param("0177.0.0.1", V4("127.0.0.1"), id="octal first part"),
        pytest.param("0x7f.0x0.0x0.0x1", V4("127.0.0.1"), id="four hex parts"),
        pytest.param("127.1", V4("127.0.0.1"), id="short form a.b"),
        pytest.param("10.1.1", V4("10.1.0.1"), id="short form a.b.c, last part 16 bits"),
        pytest.param("127.0.0.01", V4("127.0.0.1"), id="leading zero is octal, not rejected"),
        pytest.param("012.0.0.5", V4("10.0.0.5"), id="octal 012 is 10"),
        pytest.param("0", V4("0.0.0.0"), id="zero"),
        pytest.param("4294967295", V4("255.255.255.255"), id="largest number"),
        pytest.param("169.254.43518", V4("169.254.169.254"), id="metadata in short form"),
        pytest.param("::1", V6("::1"), id="bare IPv6"),
        pytest.param("[::1]", V6("::1"), id="bracketed IPv6"),
        pytest.param("[0:0:0:0:0:0:0:1]", V6("::1"), id="uncompressed IPv6"),
        pytest.param("fe80::1%eth0", V6("fe80::1%eth0"), id="zone id"),
        pytest.param("[fe80::1%25eth0]", V6("fe80::1%eth0"), id="URL zone id with %25"),
        pytest.param("[fe80::1%eth0]", V6("fe80::1%eth0"), id="bracketed zone id without %25"),
        pytest.param("[::ffff:127.0.0.1]", V6("::ffff:7f00:1"), id="IPv4-mapped with dotted tail"),
        pytest.param("64:ff9b::127.0.0.1", V6("64:ff9b::7f00:1"), id="NAT64 with dotted tail"),
    ],
)
def test_parse_ip_literal_reads_addresses_as_the_os_does(host: str, expected: object) -> None:
    assert parse_ip_literal(host) == expected


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("example.com", id="plain name"),
        pytest.param("localhost", id="single label"),
        pytest.param("1.2.3.4.example.com", id="numeric labels then a name"),
        pytest.param("0x7f.example", id="hex-looking first label"),
        pytest.param("xn--bcher-kva.example", id="IDNA name"),
        pytest.param("123abc", id="digits then letters"),
        pytest.param("0xg", id="0x then a non-hex letter"),
        pytest.param("cafe", id="hex letters without 0x"),
    ],
)
def test_parse_ip_literal_returns_none_for_hostnames(host: str) -> None:
    assert parse_ip_literal(host) is None


@pytest.mark.parametrize(
    "host, message",
    [
        pytest.param("1.2.3.4.5", "1.2.3.4.5 looks like an IPv4 address but is not a valid one", id="five parts"),
        pytest.param("0x", "0x looks like an IPv4 address but is not a valid one", id="bare 0x"),
        pytest.param("08", "08 looks like an IPv4 address but is not a valid one", id="8 is not octal"),
        pytest.param("256.1.1.1", "256.1.1.1 looks like an IPv4 address but is not a valid one", id="part over 255"),
        pytest.param("1.2.65536", "1.2.65536 looks like an IPv4 address but is not a valid one", id="tail over 16 bits"),
        pytest.param("4294967296", "4294967296 looks like an IPv4 address but is not a valid one", id="over 32 bits"),
        pytest.param("127.0.0.1.", "127.0.0.1. looks like an IPv4 address but is not a valid one", id="trailing dot"),
        pytest.param("1..2", "1..2 looks like an IPv4 address but is not a valid one", id="empty part"),
        pytest.param("a.1", "a.1 looks like an IPv4 address but is not a valid one", id="name ending in a number"),
        pytest.param("[127.0.0.1]", "[127.0.0.1] is not a valid IPv6 address", id="IPv4 in brackets"),
        pytest.param("[::1", "[::1 has unbalanced brackets", id="missing bracket"),
        pytest.param("1::2::3", "1::2::3 is not a valid IPv6 address", id="two double colons"),
        pytest.param("::ffff:0x7f.1", "::ffff:0x7f.1 is not a valid IPv6 address", id="hex IPv4 inside IPv6"),
        pytest.param("fe80::1%", "fe80::1% has an invalid IPv6 zone id", id="empty zone id"),
        pytest.param("fe80::1%e/0", "fe80::1%e/0 has an invalid IPv6 zone id", id="zone id with a slash"),
        pytest.param("1.2.3.4%eth0", "1.2.3.4%eth0 is not a valid IPv6 address", id="zone id on IPv4"),
        pytest.param("127.0.0.1 ", "'127.0.0.1 ' contains whitespace or control characters", id="trailing space"),
        pytest.param("", "the host is empty", id="empty"),
    ],
)
def test_parse_ip_literal_refuses_what_is_neither_address_nor_hostname(host: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_ip_literal(host)
    assert str(caught.value) == message


def test_parse_ip_literal_agrees_with_the_c_library() -> None:
    """Every string libc's inet_aton accepts parses to the same address; nothing it refuses does."""
    rng = random.Random(20240503)
    alphabet = "0123456789xXabcdefg."
    corpus = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(20_000)]
    accepted = 0
    for text in corpus:
        try:
            expected: V4 | None = V4(socket.inet_aton(text))
        except OSError:
            expected = None
        try:
            got = parse_ip_literal(text)
        except ValueError:
            got = None
        assert got == expected, text
        accepted += expected is not None
    assert accepted > 1_000  # the corpus really exercises the accepting side


def test_parse_ip_literal_reads_ipv6_as_the_c_library_does() -> None:
    """IPv6 strings parse exactly when libc's inet_pton accepts them, to the same address."""
    rng = random.Random(20240504)

    def candidate() -> str:
        groups = [rng.choice(["", "0", "1", "ffff", "12345", "abcd", "g"]) for _ in range(rng.randint(1, 9))]
        text = rng.choice([":", "::"]).join(groups)
        if rng.random() < 0.3:
            text += rng.choice([":", "::"]) + rng.choice(["1.2.3.4", "01.2.3.4", "1.2.3", "256.1.1.1"])
        return text

    accepted = 0
    for text in (candidate() for _ in range(20_000)):
        if ":" not in text:
            continue
        try:
            expected: V6 | None = V6(socket.inet_pton(socket.AF_INET6, text))
        except OSError:
            expected = None
        try:
            got = parse_ip_literal(text)
        except ValueError:
            got = None
        assert got == expected, text
        accepted += expected is not None
    assert accepted > 500


# --------------------------------------------------------------------------------------------
# classify with the built-in classes


@pytest.mark.parametrize(
    "host, label",
    [
        # loopback in every spelling
        pytest.param("127.0.0.1", "loopback", id="loopback dotted"),
        pytest.param("127.1", "loopback", id="loopback short form"),
        pytest.param("2130706433", "loopback", id="loopback decimal"),
        pytest.param("0x7f.1", "loopback", id="loopback hex"),
        pytest.param("0177.0.0.1", "loopback", id="loopback octal"),
        pytest.param("127.255.255.254", "loopback", id="top of 127/8"),
        pytest.param("::1", "loopback", id="IPv6 loopback"),
        pytest.param("[::1]", "loopback", id="bracketed IPv6 loopback"),
        # metadata, however written
        pytest.param("169.254.169.254", "metadata", id="AWS/GCP/Azure metadata"),
        pytest.param("0xa9fea9fe", "metadata", id="metadata in hex"),
        pytest.param("2852039166", "metadata", id="metadata in decimal"),
        pytest.param("0251.0376.0251.0376", "metadata", id="metadata in octal"),
        pytest.param("169.254.43518", "metadata", id="metadata in short form"),
        pytest.param("169.254.170.2", "metadata", id="ECS task metadata"),
        pytest.param("169.254.170.23", "metadata", id="EKS Pod Identity"),
        pytest.param("169.254.0.23", "metadata", id="Tencent metadata"),
        pytest.param("169.254.42.42", "metadata", id="Scaleway metadata"),
        pytest.param("100.100.100.200", "metadata", id="Alibaba metadata"),
        pytest.param("192.0.0.192", "metadata", id="Oracle Classic metadata"),
        pytest.param("168.63.129.16", "metadata", id="Azure WireServer"),
        pytest.param("fd00:ec2::254", "metadata", id="AWS IMDS IPv6"),
        pytest.param("fd00:ec2::23", "metadata", id="EKS Pod Identity IPv6"),
        pytest.param("fd20:ce::254", "metadata", id="GCP IPv6"),
        pytest.param("fd00:c1::a9fe:a9fe", "metadata", id="Oracle IPv6"),
        pytest.param("::ffff:169.254.169.254", "metadata", id="IPv4-mapped metadata"),
        pytest.param("64:ff9b::a9fe:a9fe", "metadata", id="NAT64 metadata"),
        pytest.param("2002:a9fe:a9fe::1", "metadata", id="6to4 metadata"),
        # RFC 1918, CGNAT, link-local
        pytest.param("10.0.0.5", "private", id="10/8"),
        pytest.param("012.0.0.5", "private", id="10/8 in octal"),
        pytest.param("10.1.1", "private", id="10/8 short form"),
        pytest.param("172.16.0.1", "private", id="bottom of 172.16/12"),
        pytest.param("172.31.255.255", "private", id="top of 172.16/12"),
        pytest.param("192.168.1.1", "private", id="192.168/16"),
        pytest.param("100.64.0.1", "cgnat", id="bottom of 100.64/10"),
        pytest.param("100.127.255.255", "cgnat", id="top of 100.64/10"),
        pytest.param("169.254.1.1", "link_local", id="169.254/16"),
        pytest.param("fe80::1", "link_local", id="fe80::/10"),
        pytest.param("fe80::1%eth0", "link_local", id="fe80::/10 with zone id"),
        pytest.param("[fe80::1%25eth0]", "link_local", id="fe80::/10 with URL zone id"),
        # unspecified, this network, multicast, broadcast
        pytest.param("0.0.0.0", "unspecified", id="0.0.0.0"),
        pytest.param("0", "unspecified", id="0 as one number"),
        pytest.param("::", "unspecified", id="::"),
        pytest.param("[::]", "unspecified", id="[::]"),
        pytest.param("0.1.2.3", "this_network", id="0/8"),
        pytest.param("224.0.0.1", "multicast", id="224/4"),
        pytest.param("239.255.255.250", "multicast", id="SSDP multicast"),
        pytest.param("ff02::1", "multicast", id="ff00::/8"),
        pytest.param("255.255.255.255", "broadcast", id="broadcast"),
        pytest.param("4294967295", "broadcast", id="broadcast as one number"),
        # reserved, documentation, benchmarking, unique-local
        pytest.param("240.0.0.1", "reserved", id="240/4"),
        pytest.param("192.0.0.8", "reserved", id="IETF protocol assignments"),
        pytest.param("192.88.99.1", "reserved", id="6to4 relay anycast"),
        pytest.param("4000::1", "reserved", id="unassigned IPv6"),
        pytest.param("2001:10::1", "reserved", id="ORCHID"),
        pytest.param("fec0::1", "reserved", id="site-local"),
        pytest.param("::8.8.8.8", "reserved", id="IPv4-compatible with a public IPv4"),
        pytest.param("::ffff:0:8.8.8.8", "reserved", id="IPv4-translated with a public IPv4"),
        pytest.param("192.0.2.1", "documentation", id="TEST-NET-1"),
        pytest.param("198.51.100.1", "documentation", id="TEST-NET-2"),
        pytest.param("203.0.113.1", "documentation", id="TEST-NET-3"),
        pytest.param("2001:db8::1", "documentation", id="2001:db8::/32"),
        pytest.param("3fff::1", "documentation", id="3fff::/20"),
        pytest.param("198.18.0.1", "benchmarking", id="bottom of 198.18/15"),
        pytest.param("198.19.255.255", "benchmarking", id="top of 198.18/15"),
        pytest.param("2001:2::1", "benchmarking", id="2001:2::/48"),
        pytest.param("fc00::1", "unique_local", id="fc00::/8"),
        pytest.param("fd12:3456::1", "unique_local", id="fd00::/8"),
        # IPv6 forms embedding a denied IPv4
        pytest.param("::ffff:127.0.0.1", "embedded_ipv4", id="IPv4-mapped loopback"),
        pytest.param("::ffff:7f00:1", "embedded_ipv4", id="IPv4-mapped loopback in hex"),
        pytest.param("::127.0.0.1", "embedded_ipv4", id="IPv4-compatible loopback"),
        pytest.param("::ffff:0:127.0.0.1", "embedded_ipv4", id="IPv4-translated loopback"),
        pytest.param("64:ff9b::7f00:1", "embedded_ipv4", id="NAT64 loopback"),
        pytest.param("64:ff9b::10.0.0.5", "embedded_ipv4", id="NAT64 private"),
        pytest.param("64:ff9b:1::7f00:1", "embedded_ipv4", id="local-use NAT64 loopback"),
        pytest.param("2002:7f00:1::1", "embedded_ipv4", id="6to4 loopback"),
        pytest.param("2002:a00:5::1", "embedded_ipv4", id="6to4 private"),
        pytest.param("2001:0:4136:e378:8000:63bf:80ff:fffe", "embedded_ipv4", id="Teredo client loopback"),
        pytest.param("2001:0:a00:5:8000:63bf:f7f7:f7f7", "embedded_ipv4", id="Teredo server private"),
        # globally routable, including just outside each range
        pytest.param("8.8.8.8", None, id="public IPv4"),
        pytest.param("134744072", None, id="public IPv4 as one number"),
        pytest.param("0x08080808", None, id="public IPv4 in hex"),
        pytest.param("100.63.255.255", None, id="just below CGNAT"),
        pytest.param("100.128.0.0", None, id="just above CGNAT"),
        pytest.param("172.15.255.255", None, id="just below 172.16/12"),
        pytest.param("172.32.0.0", None, id="just above 172.16/12"),
        pytest.param("169.253.255.255", None, id="just below link-local"),
        pytest.param("192.0.1.255", None, id="just below TEST-NET-1"),
        pytest.param("223.255.255.255", None, id="just below multicast"),
        pytest.param("2606:4700:4700::1111", None, id="public IPv6"),
        pytest.param("::ffff:8.8.8.8", None, id="IPv4-mapped public"),
        pytest.param("64:ff9b::808:808", None, id="NAT64 public"),
        pytest.param("2002:808:808::1", None, id="6to4 public"),
        pytest.param("2001:0:4136:e378:8000:63bf:f7f7:f7f7", None, id="Teredo public server and client"),
        pytest.param("2001:1::1", None, id="PCP anycast"),
    ],
)
def test_classify_builtin_classes(host: str, label: str | None) -> None:
    ip = parse_ip_literal(host)
    assert ip is not None
    assert classify(ip, 443, DEFAULT) == label


def test_every_label_is_documented() -> None:
    assert LABELS == {
        "metadata", "egress_itself", "denied_network", "embedded_ipv4", "loopback", "private",
        "cgnat", "link_local", "unspecified", "this_network", "multicast", "broadcast",
        "reserved", "documentation", "benchmarking", "unique_local",
    }  # fmt: skip


# --------------------------------------------------------------------------------------------
# settings.networks.allow / deny and self addresses


EVERYTHING = nets("0.0.0.0/0", "::/0")


@pytest.mark.parametrize(
    "policy, host, label",
    [
        pytest.param(NetworkPolicy(allow=nets("127.0.0.2/32")), "127.0.0.2", None, id="allow opens one loopback address"),
        pytest.param(NetworkPolicy(allow=nets("127.0.0.2/32")), "127.0.0.1", "loopback", id="allow leaves the rest of loopback"),
        pytest.param(NetworkPolicy(allow=nets("127.0.0.2/32")), "127.0.0.3", "loopback", id="allow /32 is exact"),
        pytest.param(NetworkPolicy(allow=nets("127.0.0.2/32")), "::ffff:127.0.0.2", None, id="mapped form follows the IPv4 allow"),
        pytest.param(NetworkPolicy(allow=nets("127.0.0.2/32")), "::ffff:127.0.0.1", "embedded_ipv4", id="mapped form of a still-denied address"),
        pytest.param(NetworkPolicy(allow=nets("::/0")), "::ffff:127.0.0.1", "embedded_ipv4", id="IPv6 allow does not open embedded IPv4"),
        pytest.param(NetworkPolicy(allow=nets("10.20.0.0/16")), "10.20.3.4", None, id="allow opens a private range"),
        pytest.param(NetworkPolicy(allow=nets("10.20.0.0/16")), "10.21.0.1", "private", id="outside the allowed range stays private"),
        pytest.param(NetworkPolicy(allow=nets("169.254.0.0/16")), "169.254.1.1", None, id="allow opens link-local"),
        pytest.param(NetworkPolicy(allow=nets("169.254.0.0/16")), "169.254.169.254", "metadata", id="allow never opens metadata"),
        pytest.param(NetworkPolicy(allow=EVERYTHING), "169.254.169.254", "metadata", id="allow all never opens metadata"),
        pytest.param(NetworkPolicy(allow=EVERYTHING), "100.100.100.200", "metadata", id="allow all keeps Alibaba metadata"),
        pytest.param(NetworkPolicy(allow=EVERYTHING), "fd00:ec2::254", "metadata", id="allow all keeps AWS IPv6 metadata"),
        pytest.param(NetworkPolicy(allow=EVERYTHING), "::ffff:169.254.169.254", "metadata", id="allow all keeps mapped metadata"),
        pytest.param(NetworkPolicy(allow=EVERYTHING), "10.0.0.5", None, id="allow all opens private"),
        pytest.param(NetworkPolicy(allow=nets("fc00::/7")), "fd12::1", None, id="allow opens unique-local"),
        pytest.param(NetworkPolicy(allow=nets("fc00::/7")), "fd20:ce::254", "metadata", id="unique-local allow keeps GCP metadata"),
        pytest.param(NetworkPolicy(allow=nets("10.0.0.0/8"), deny=nets("10.0.5.0/24")), "10.0.5.1", "denied_network", id="deny beats allow"),
        pytest.param(NetworkPolicy(allow=nets("10.0.0.0/8"), deny=nets("10.0.5.0/24")), "10.0.6.1", None, id="deny is exact"),
        pytest.param(NetworkPolicy(deny=nets("8.8.8.0/24")), "8.8.8.8", "denied_network", id="deny a public range"),
        pytest.param(NetworkPolicy(deny=nets("8.8.8.0/24")), "::ffff:8.8.8.8", "denied_network", id="deny reaches the mapped form"),
        pytest.param(NetworkPolicy(deny=nets("8.8.8.0/24")), "64:ff9b::808:808", "denied_network", id="deny reaches the NAT64 form"),
        pytest.param(NetworkPolicy(deny=nets("8.8.8.0/24")), "2002:808:808::1", "denied_network", id="deny reaches the 6to4 form"),
        pytest.param(NetworkPolicy(deny=nets("2606:4700::/32")), "2606:4700:4700::1111", "denied_network", id="deny an IPv6 range"),
        pytest.param(NetworkPolicy(deny=nets("8.8.8.0/24")), "1.1.1.1", None, id="deny leaves other addresses"),
    ],
)
def test_classify_with_allow_and_deny(policy: NetworkPolicy, host: str, label: str | None) -> None:
    ip = parse_ip_literal(host)
    assert ip is not None
    assert classify(ip, 443, policy) == label


LOOPBACK_LISTENER = NetworkPolicy(allow=nets("127.0.0.0/8"), self_addresses=frozenset({(V4("127.0.0.1"), 8080)}))
WILDCARD_LISTENER = NetworkPolicy(
    allow=nets("127.0.0.0/8", "10.0.0.0/8", "::1/128"),
    self_addresses=frozenset({(V4("0.0.0.0"), 8080)}),
    local_addresses=frozenset({V4("10.1.2.3")}),
)
IPV6_WILDCARD_ADMIN = NetworkPolicy(allow=nets("127.0.0.0/8"), self_addresses=frozenset({(V6("::"), 8081)}))


@pytest.mark.parametrize(
    "policy, host, port, label",
    [
        pytest.param(LOOPBACK_LISTENER, "127.0.0.1", 8080, "egress_itself", id="own listen address"),
        pytest.param(LOOPBACK_LISTENER, "127.1", 8080, "egress_itself", id="own listen address in short form"),
        pytest.param(LOOPBACK_LISTENER, "::ffff:127.0.0.1", 8080, "egress_itself", id="own address, mapped"),
        pytest.param(LOOPBACK_LISTENER, "0.0.0.0", 8080, "egress_itself", id="0.0.0.0 reaches local listeners"),
        pytest.param(LOOPBACK_LISTENER, "127.0.0.1", 8081, None, id="other port on the same address"),
        pytest.param(LOOPBACK_LISTENER, "127.0.0.2", 8080, None, id="same port on another address"),
        pytest.param(WILDCARD_LISTENER, "127.0.0.2", 8080, "egress_itself", id="wildcard listener covers all loopback"),
        pytest.param(WILDCARD_LISTENER, "10.1.2.3", 8080, "egress_itself", id="wildcard listener covers interface addresses"),
        pytest.param(WILDCARD_LISTENER, "::1", 8080, "egress_itself", id="wildcard listener covers IPv6 loopback"),
        pytest.param(WILDCARD_LISTENER, "10.1.2.4", 8080, None, id="another host on the port"),
        pytest.param(WILDCARD_LISTENER, "10.1.2.3", 443, None, id="this host on another port"),
        pytest.param(IPV6_WILDCARD_ADMIN, "127.0.0.5", 8081, "egress_itself", id=":: listener covers IPv4 too"),
        pytest.param(
            NetworkPolicy(allow=nets("0.0.0.0/0"), self_addresses=frozenset({(V4("10.0.0.1"), 8080)})),
            "10.0.0.1", 8080, "egress_itself", id="allow never opens egress itself",
        ),
    ],
)
def test_classify_refuses_egress_itself(policy: NetworkPolicy, host: str, port: int, label: str | None) -> None:
    ip = parse_ip_literal(host)
    assert ip is not None
    assert classify(ip, port, policy) == label


# --------------------------------------------------------------------------------------------
# helpers


@pytest.mark.parametrize(
    "host, port, label, policy, message",
    [
        pytest.param("127.0.0.1", 443, "loopback", None, "127.0.0.1 is loopback", id="loopback"),
        pytest.param("169.254.169.254", 80, "metadata", None, "169.254.169.254 is a cloud metadata address", id="metadata"),
        pytest.param("10.0.0.5", 443, "private", None, "10.0.0.5 is a private (RFC 1918) address", id="private"),
        pytest.param("127.0.0.1", 8080, "egress_itself", None, "127.0.0.1 is egress itself (port 8080)", id="itself"),
        pytest.param("8.8.8.8", 443, "denied_network", None, "8.8.8.8 is in a network denied by settings.networks.deny", id="deny"),
        pytest.param(
            "2002:7f00:1::1", 443, "embedded_ipv4", None,
            "2002:7f00:1::1 is an IPv6 form of the denied IPv4 address 127.0.0.1", id="6to4",
        ),
        pytest.param(
            "2001:0:4136:e378:8000:63bf:80ff:fffe", 443, "embedded_ipv4", DEFAULT,
            "2001:0:4136:e378:8000:63bf:80ff:fffe is an IPv6 form of the denied IPv4 address 127.0.0.1",
            id="Teredo names only the denied address when given the networks",
        ),
    ],
)
def test_describe(host: str, port: int, label: str, policy: NetworkPolicy | None, message: str) -> None:
    ip = parse_ip_literal(host)
    assert ip is not None
    assert describe(ip, port, label, policy) == message


def test_embedded_ipv4_reads_teredo_server_and_inverted_client() -> None:
    assert embedded_ipv4(V6("2001:0:4136:e378:8000:63bf:80ff:fffe")) == (V4("65.54.227.120"), V4("127.0.0.1"))
    assert embedded_ipv4(V6("2606:4700:4700::1111")) == ()
    assert embedded_ipv4(V4("127.0.0.1")) == ()


@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param("10.0.0.1/8", "10.0.0.1/8 has host bits set; write 10.0.0.0/8", id="host bits"),
        pytest.param("ten", "'ten' is not an IP network (write e.g. 10.20.0.0/16 or fd00::/8)", id="not a network"),
    ],
)
def test_parse_network_says_what_to_write(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_network(text)
    assert str(caught.value) == message


def test_parse_network_takes_single_addresses() -> None:
    assert parse_network("127.0.0.2") == ipaddress.ip_network("127.0.0.2/32")


def test_network_policy_refuses_strings() -> None:
    with pytest.raises(TypeError) as caught:
        NetworkPolicy(allow=("10.0.0.0/8",))  # type: ignore[arg-type]
    assert str(caught.value) == (
        "NetworkPolicy.allow takes ip_network objects (see parse_network), got '10.0.0.0/8'"
    )


def test_network_policy_is_a_value() -> None:
    a = NetworkPolicy(allow=list(nets("10.0.0.0/8")))  # type: ignore[arg-type]
    b = NetworkPolicy(allow=nets("10.0.0.0/8"))
    assert a == b
    assert hash(a) == hash(b)
    assert a.allow == nets("10.0.0.0/8")
    assert "_compiled" not in repr(a)
