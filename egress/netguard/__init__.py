"""The network guard: resolve hosts, classify every address, pin connections to vetted ones.

``addresses`` is pure (IP literal parsing, ``classify``, ``NetworkPolicy``); ``resolver`` is the
dnspython adapter behind the ``Resolver`` protocol; ``guard`` ties them together in
``AddressGuard``, which the addon calls per connection.
"""

from __future__ import annotations

from egress.netguard.addresses import (
    LABELS,
    IPAddress,
    IPNetwork,
    NetworkPolicy,
    classify,
    describe,
    embedded_ipv4,
    explain,
    parse_ip_literal,
    parse_network,
)
from egress.netguard.guard import (
    BLOCKED_ADDRESS,
    DNS_FAILURE,
    AddressGuard,
    Blocked,
    Vetted,
    local_interface_addresses,
)
from egress.netguard.resolver import DnsResolver, Resolver, parse_nameserver

__all__ = [
    "BLOCKED_ADDRESS",
    "DNS_FAILURE",
    "LABELS",
    "AddressGuard",
    "Blocked",
    "DnsResolver",
    "IPAddress",
    "IPNetwork",
    "NetworkPolicy",
    "Resolver",
    "Vetted",
    "classify",
    "describe",
    "embedded_ipv4",
    "explain",
    "local_interface_addresses",
    "parse_ip_literal",
    "parse_nameserver",
    "parse_network",
]
