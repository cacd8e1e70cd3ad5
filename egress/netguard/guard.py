"""The address guard: vet a destination, pin it to one checked address, remember what was vetted.

``AddressGuard.vet(host, port)`` is called once per CONNECT or plain-HTTP request. An IP literal
is classified as it is; a name is resolved and *every* address of the answer is classified.
One denied address blocks the whole name: a mixed answer is what DNS rebinding and cache
poisoning look like, and a client library may pick any address of the answer. The address
returned in ``Vetted`` is the one to dial (IPv4 preferred: egress dials exactly one address
and does not fall back to the other family). ``was_vetted`` is the last-line check for
``server_connect``: only pairs handed out recently, and still allowed by the current
networks, pass.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from egress.errors import ResolveError
from egress.netguard.resolver import Resolver
from egress.policy.addresses import NetworkPolicy, classify, describe, explain
from egress.policy.hosts import IPAddress, parse_ip_literal
from egress.reasons import Reason

__all__ = [
    "AddressGuard",
    "Blocked",
    "Vetted",
    "local_interface_addresses",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Vetted:
    """``host:port`` may be reached; dial ``ip`` (and only ``ip``)."""

    host: str
    port: int
    ip: IPAddress


@dataclass(frozen=True)
class Blocked:
    """``host:port`` may not be reached. ``detail`` is safe to show the skill."""

    reason: Reason  # BLOCKED_ADDRESS | DNS_FAILURE
    detail: str
    addresses: tuple[IPAddress, ...] = ()


class AddressGuard:
    """Vets destinations against a ``NetworkPolicy`` and remembers the (ip, port) pairs it allowed.

    ``pin_ttl`` is how long a vetted pair stays valid for ``was_vetted`` (each vet renews it);
    at most ``max_pins`` pairs are kept, oldest forgotten first.
    """

    def __init__(
        self,
        resolver: Resolver,
        networks: NetworkPolicy,
        *,
        pin_ttl: float = 600.0,
        max_pins: int = 65_536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver = resolver
        self._networks = networks
        self._pin_ttl = pin_ttl
        self._max_pins = max_pins
        self._clock = clock
        self._pins: dict[tuple[IPAddress, int], float] = {}

    @property
    def networks(self) -> NetworkPolicy:
        return self._networks

    def replace_networks(self, networks: NetworkPolicy) -> None:
        """Use new networks from now on; pins already handed out are re-checked against them."""
        self._networks = networks

    async def vet(self, host: str, port: int) -> Vetted | Blocked:
        """Decide whether ``host:port`` (host normalised) may be dialled, and at which address."""
        try:
            literal = parse_ip_literal(host)
        except ValueError as exc:
            return Blocked(Reason.BLOCKED_ADDRESS, str(exc))
        if literal is not None:
            networks = self._networks
            label = classify(literal, port, networks)
            if label is not None:
                return Blocked(Reason.BLOCKED_ADDRESS, describe(literal, port, label, networks), (literal,))
            return self._pin(host, port, literal)

        if host == "localhost" or host.endswith(".localhost"):
            # RFC 6761: resolvers may answer these with loopback without asking DNS; never
            # let a configured nameserver decide what "localhost" means.
            return Blocked(Reason.BLOCKED_ADDRESS, f"{host} is a loopback name")
        try:
            addresses = await self._resolver.resolve(host)
        except ResolveError as exc:
            return Blocked(Reason.DNS_FAILURE, exc.detail)
        except Exception:  # a faulty resolver must not open the door
            log.exception("resolver failed for %s", host)
            return Blocked(Reason.DNS_FAILURE, "resolver error")
        if not addresses:
            return Blocked(Reason.DNS_FAILURE, "no A/AAAA records")
        networks = self._networks  # read after the await: a reload may have happened meanwhile
        denied = [(ip, label) for ip in addresses if (label := classify(ip, port, networks)) is not None]
        if denied:
            ip, label = denied[0]
            detail = f"{host} resolves to {ip}, which is {explain(label, ip, port, networks)}"
            if len(denied) < len(addresses):
                detail += " (one denied address blocks the whole answer)"
            return Blocked(Reason.BLOCKED_ADDRESS, detail, tuple(addresses))
        chosen = next((ip for ip in addresses if ip.version == 4), addresses[0])
        return self._pin(host, port, chosen)

    def was_vetted(self, ip: IPAddress, port: int) -> bool:
        """True only if ``vet`` returned ``ip:port`` within ``pin_ttl`` and it is still allowed."""
        keys = [(ip, port)]
        if ip.version == 6 and ip.ipv4_mapped is not None:
            keys.append((ip.ipv4_mapped, port))
        now = self._clock()
        for key in keys:
            expires = self._pins.get(key)
            if expires is None:
                continue
            if expires <= now:
                del self._pins[key]
                continue
            return classify(key[0], port, self._networks) is None
        return False

    def _pin(self, host: str, port: int, ip: IPAddress) -> Vetted:
        key = (ip, port)
        self._pins.pop(key, None)  # re-insert so dict order is age order
        self._pins[key] = self._clock() + self._pin_ttl
        while len(self._pins) > self._max_pins:
            del self._pins[next(iter(self._pins))]
        return Vetted(host, port, ip)


def local_interface_addresses(proc: Path = Path("/proc/net")) -> frozenset[IPAddress]:
    """This host's interface addresses, read from Linux's /proc (empty elsewhere).

    For ``NetworkPolicy.local_addresses``: egress listening on 0.0.0.0 answers on each of them.
    Reads files; call it when building the policy, not per connection.
    """
    found: set[IPAddress] = set()
    try:
        # fib_trie lists each local IPv4 address as "|-- ADDR" followed by "/32 host LOCAL".
        candidate = None
        for line in (proc / "fib_trie").read_text().splitlines():
            text = line.strip()
            if text.startswith("|-- "):
                candidate = text[4:]
            elif text == "/32 host LOCAL" and candidate is not None:
                found.add(ipaddress.IPv4Address(candidate))
    except (OSError, ValueError):
        log.debug("cannot read IPv4 interface addresses from %s", proc)
    try:
        for line in (proc / "if_inet6").read_text().splitlines():
            fields = line.split()
            if fields:
                found.add(ipaddress.IPv6Address(int(fields[0], 16)))
    except (OSError, ValueError):
        log.debug("cannot read IPv6 interface addresses from %s", proc)
    return frozenset(found)
