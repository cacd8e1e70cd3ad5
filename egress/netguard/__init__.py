"""The network guard: resolve hosts, then vet every address before egress dials it.

``resolver`` is the dnspython adapter behind the ``Resolver`` protocol; ``guard`` ties it to
the address classes of the policy core (egress/policy/addresses.py) in ``AddressGuard``, which
the gate calls per CONNECT or plain-HTTP request, and ``was_vetted``, the last-line check where
a connection opens.

What it may import: the policy core, egress.errors, egress.reasons, dnspython and the standard
library. Never mitmproxy, aiohttp, the proxy, ops or the CLI.
"""

from __future__ import annotations

from egress.netguard.guard import AddressGuard, Blocked, Vetted, local_interface_addresses
from egress.netguard.resolver import DnsResolver, Resolver

__all__ = [
    "AddressGuard",
    "Blocked",
    "DnsResolver",
    "Resolver",
    "Vetted",
    "local_interface_addresses",
]
