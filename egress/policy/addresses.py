"""Which addresses egress may dial: the built-in address classes and ``settings.networks``.

Pure: no I/O, no clock (IP literals are parsed in egress/policy/hosts.py). The network guard
(egress/netguard) applies this to every address it resolves; `egress check` (lint) to rules.

* ``classify`` says why an ``(address, port)`` may not be dialled, or ``None`` when it may.
  The order: cloud metadata addresses (never opened), egress's own listening addresses,
  ``settings.networks.deny``, then the built-in classes, which ``settings.networks.allow`` opens.
  IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo) are judged
  by that IPv4 address too; to open one, allow the IPv4 network.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeAlias

from egress.policy.hosts import IPAddress

__all__ = [
    "LABELS",
    "IPNetwork",
    "NetworkPolicy",
    "classify",
    "describe",
    "embedded_ipv4",
    "explain",
    "parse_network",
]

IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
_Range: TypeAlias = tuple[int, int]

# What each label means, as the end of "ADDRESS is ...". The keys are the stable labels.
_PHRASES = {
    "metadata": "a cloud metadata address",
    "egress_itself": "egress itself",
    "denied_network": "in a network denied by settings.networks.deny",
    "embedded_ipv4": "an IPv6 form of a denied IPv4 address",
    "loopback": "loopback",
    "private": "a private (RFC 1918) address",
    "cgnat": "a carrier-grade NAT (100.64.0.0/10) address",
    "link_local": "link-local",
    "unspecified": "the unspecified address",
    "this_network": "in 0.0.0.0/8 ('this network')",
    "multicast": "multicast",
    "broadcast": "the broadcast address",
    "reserved": "in a reserved range",
    "documentation": "in a documentation range",
    "benchmarking": "in a benchmarking range",
    "unique_local": "a unique-local (fc00::/7) address",
}
LABELS = frozenset(_PHRASES)

def parse_network(text: str) -> IPNetwork:
    """Parse a ``settings.networks`` entry; ``ValueError`` says what to write instead."""
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP network (write e.g. 10.20.0.0/16 or fd00::/8)") from None
    raise ValueError(f"{text} has host bits set; write {loose}")


# ---------------------------------------------------------------------------------------------
# Tables


def _ranges(*cidrs: str) -> tuple[_Range, ...]:
    nets = [ipaddress.ip_network(c) for c in cidrs]
    return tuple((int(n.network_address), int(n.broadcast_address)) for n in nets)


def _table(*rows: tuple[str, str]) -> tuple[tuple[int, int, str], ...]:
    ranges = _ranges(*(c for c, _ in rows))
    return tuple((lo, hi, label) for (lo, hi), (_, label) in zip(ranges, rows, strict=True))


# Always denied, whatever allow says. Sources: provider documentation (AWS IMDS and ECS/EKS
# agents, GCP, Azure, Oracle, Alibaba, Tencent, Scaleway, Linode/Akamai).
_METADATA4 = _ranges(
    "169.254.169.254/32",  # AWS, GCP, Azure, Oracle, OpenStack, DigitalOcean, IBM, Hetzner, Linode
    "169.254.170.2/32",  # AWS ECS task metadata and credentials
    "169.254.170.23/32",  # AWS EKS Pod Identity agent
    "169.254.0.23/32",  # Tencent Cloud
    "169.254.42.42/32",  # Scaleway
    "100.100.100.200/32",  # Alibaba Cloud
    "192.0.0.192/32",  # Oracle Cloud Classic
    "168.63.129.16/32",  # Azure WireServer (a public address that hands out VM secrets)
)
_METADATA6 = _ranges(
    "fd00:ec2::/32",  # AWS IPv6 service block: IMDS ::254, EKS Pod Identity ::23, DNS, NTP
    "fd20:ce::254/128",  # GCP
    "fd00:c1::a9fe:a9fe/128",  # Oracle Cloud
    "fd00:42::42/128",  # Scaleway
    "fd00:a9fe:a9fe::1/128",  # Linode / Akamai
    "fd00:100::100:200/128",  # Alibaba Cloud
)

# First match wins; "" means globally routable (no class).
_V4_CLASSES = _table(
    ("0.0.0.0/32", "unspecified"),
    ("0.0.0.0/8", "this_network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "cgnat"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link_local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),  # IETF protocol assignments
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved"),  # deprecated 6to4 relay anycast
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
)
_V6_CLASSES = _table(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", ""),  # IPv4-mapped: the OS dials the IPv4 address, judged on its own
    ("::ffff:0:0:0/96", "reserved"),  # IPv4-translated (RFC 2765, obsolete)
    ("::/96", "reserved"),  # IPv4-compatible (deprecated, not routed)
    ("64:ff9b::/96", ""),  # NAT64 well-known prefix: judged by the embedded IPv4
    ("64:ff9b:1::/48", "reserved"),  # local-use NAT64 (RFC 8215), not globally reachable
    ("2001::/32", ""),  # Teredo: judged by the embedded server and client IPv4
    ("2001:1::1/128", ""),  # PCP anycast
    ("2001:1::2/128", ""),  # TURN anycast
    ("2001:1::3/128", ""),  # DNS-SD SRP anycast
    ("2001:2::/48", "benchmarking"),
    ("2001:3::/32", ""),  # AMT
    ("2001:4:112::/48", ""),  # AS112
    ("2001:db8::/32", "documentation"),
    ("2001::/23", "reserved"),  # the rest of the IETF protocol assignments (ORCHID, ...)
    ("2002::/16", ""),  # 6to4: judged by the embedded IPv4
    ("3fff::/20", "documentation"),
    ("2000::/3", ""),  # global unicast
    ("fc00::/7", "unique_local"),
    ("fe80::/10", "link_local"),
    ("fec0::/10", "reserved"),  # site-local (deprecated)
    ("ff00::/8", "multicast"),
    ("::/0", "reserved"),  # everything else is unassigned
)

_M32 = 0xFFFF_FFFF
_LOOPBACK4 = _ranges("127.0.0.0/8")[0]


def _first(value: int, table: tuple[tuple[int, int, str], ...]) -> str:
    for lo, hi, label in table:
        if lo <= value <= hi:
            return label
    return ""


def _within(value: int, ranges: tuple[_Range, ...]) -> bool:
    return any(lo <= value <= hi for lo, hi in ranges)


def _embedded(n: int) -> tuple[int, ...]:
    """The IPv4 addresses (as ints) an IPv6 address (as int) carries, by its prefix."""
    top96 = n >> 32
    if top96 in (0xFFFF, 0xFFFF_0000, 0x64_FF9B_0000_0000_0000_0000) or (top96 == 0 and n > 1):
        return (n & _M32,)  # mapped, translated, NAT64 /96, compatible (not :: or ::1)
    if n >> 80 == 0x64_FF9B_0001:
        # Local-use NAT64: the operator picks the prefix length, so try every RFC 6052 layout.
        # Drop the reserved "u" octet (bits 64-71) first; what remains is 120 bits.
        m = (n >> 64) << 56 | (n & ((1 << 56) - 1))
        found = ((m >> (120 - p - 32)) & _M32 for p in (48, 56, 64, 88))
        return tuple(dict.fromkeys(found))
    if n >> 112 == 0x2002:
        return ((n >> 80) & _M32,)  # 6to4
    if n >> 96 == 0x2001_0000:
        return ((n >> 64) & _M32, ~n & _M32)  # Teredo: server, then the client (stored inverted)
    return ()


def embedded_ipv4(ip: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address embeds (mapped, compatible, NAT64, 6to4, Teredo)."""
    if ip.version == 4:
        return ()
    return tuple(ipaddress.IPv4Address(v) for v in _embedded(int(ip)))


# ---------------------------------------------------------------------------------------------
# Policy


def _as_networks(name: str, values: Iterable[object]) -> tuple[IPNetwork, ...]:
    items: list[IPNetwork] = []
    for item in values:
        if not isinstance(item, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            raise TypeError(f"NetworkPolicy.{name} takes ip_network objects (see parse_network), got {item!r}")
        items.append(item)
    return tuple(items)


def _key(ip: IPAddress) -> tuple[int, int]:
    """(version, value) with IPv4-mapped IPv6 folded to IPv4: the OS dials those as IPv4."""
    if ip.version == 6 and int(ip) >> 32 == 0xFFFF:
        return (4, int(ip) & _M32)
    return (ip.version, int(ip))


@dataclass(frozen=True)
class _Compiled:
    allow4: tuple[_Range, ...]
    allow6: tuple[_Range, ...]
    deny4: tuple[_Range, ...]
    deny6: tuple[_Range, ...]
    self_exact: frozenset[tuple[int, int, int]]  # (version, value, port)
    self_ports: frozenset[int]  # every port egress listens on
    self_any_ports: frozenset[int]  # ports egress listens on at 0.0.0.0 or ::
    local: frozenset[tuple[int, int]]  # this host's addresses, as _key()


@dataclass(frozen=True)
class NetworkPolicy:
    """The network side of the policy: ``settings.networks`` and egress's own addresses.

    ``self_addresses`` holds egress's listen and admin ``(ip, port)`` pairs; an unspecified ip
    (``0.0.0.0`` or ``::``, either one covering both families) means every local address on
    that port: loopback, the unspecified address and ``local_addresses`` (this host's interface
    addresses, see ``local_interface_addresses``). Lookup tables are built once, here.
    """

    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()
    self_addresses: frozenset[tuple[IPAddress, int]] = frozenset()
    local_addresses: frozenset[IPAddress] = frozenset()
    _compiled: _Compiled = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        allow = _as_networks("allow", self.allow)
        deny = _as_networks("deny", self.deny)
        selves = frozenset(self.self_addresses)
        local = frozenset(self.local_addresses)
        object.__setattr__(self, "allow", allow)
        object.__setattr__(self, "deny", deny)
        object.__setattr__(self, "self_addresses", selves)
        object.__setattr__(self, "local_addresses", local)

        def ranges(nets: tuple[IPNetwork, ...], version: int) -> tuple[_Range, ...]:
            return tuple(
                (int(n.network_address), int(n.broadcast_address)) for n in nets if n.version == version
            )

        exact: set[tuple[int, int, int]] = set()
        any_ports: set[int] = set()
        for ip, port in selves:
            if int(ip) == 0:
                any_ports.add(port)
            else:
                exact.add((*_key(ip), port))
        compiled = _Compiled(
            allow4=ranges(allow, 4),
            allow6=ranges(allow, 6),
            deny4=ranges(deny, 4),
            deny6=ranges(deny, 6),
            self_exact=frozenset(exact),
            self_ports=frozenset(port for _, port in selves),
            self_any_ports=frozenset(any_ports),
            local=frozenset(_key(ip) for ip in local),
        )
        object.__setattr__(self, "_compiled", compiled)


def _is_self(c: _Compiled, version: int, value: int, port: int) -> bool:
    if port not in c.self_ports:
        return False
    if value == 0 or (version, value, port) in c.self_exact:
        return True  # dialling 0.0.0.0 or :: reaches this host's own listeners
    if port not in c.self_any_ports:
        return False
    loopback = value == 1 if version == 6 else _LOOPBACK4[0] <= value <= _LOOPBACK4[1]
    return loopback or (version, value) in c.local


def _v4_class(c: _Compiled, value: int) -> str | None:
    label = _first(value, _V4_CLASSES)
    return label if label and not _within(value, c.allow4) else None


def classify(ip: IPAddress, port: int, networks: NetworkPolicy) -> str | None:
    """``None`` if egress may dial ``ip:port``, else the label (see ``LABELS``) saying why not."""
    c = networks._compiled
    value = int(ip)
    if ip.version == 4:
        if _within(value, _METADATA4):
            return "metadata"
        if _is_self(c, 4, value, port):
            return "egress_itself"
        if _within(value, c.deny4):
            return "denied_network"
        return _v4_class(c, value)

    carried = _embedded(value)
    if _within(value, _METADATA6) or any(_within(v, _METADATA4) for v in carried):
        return "metadata"
    if _is_self(c, *_key(ip), port):
        return "egress_itself"
    if _within(value, c.deny6) or any(_within(v, c.deny4) for v in carried):
        return "denied_network"
    if any(_v4_class(c, v) for v in carried):
        return "embedded_ipv4"
    label = _first(value, _V6_CLASSES)
    return label if label and not _within(value, c.allow6) else None


def explain(label: str, ip: IPAddress, port: int, networks: NetworkPolicy | None = None) -> str:
    """What ``label`` means for ``ip:port``, to follow "ADDRESS is" (e.g. ``"loopback"``).

    With ``networks``, an ``embedded_ipv4`` explanation names only the embedded IPv4
    addresses those networks deny (a Teredo address also carries its harmless server's).
    """
    phrase = _PHRASES.get(label, label)
    if label == "egress_itself":
        return f"{phrase} (port {port})"
    if label == "embedded_ipv4":
        carried = embedded_ipv4(ip)
        if networks is not None:
            carried = tuple(v for v in carried if classify(v, port, networks) is not None) or carried
        named = " / ".join(str(v) for v in carried)
        return f"an IPv6 form of the denied IPv4 address {named}" if named else phrase
    return phrase


def describe(ip: IPAddress, port: int, label: str, networks: NetworkPolicy | None = None) -> str:
    """One sentence for a denial, safe to show the skill: ``"127.0.0.1 is loopback"``."""
    return f"{ip} is {explain(label, ip, port, networks)}"
