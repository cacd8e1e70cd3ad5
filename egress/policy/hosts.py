"""How egress spells hosts: IP literals, host names, and `host:port`, parsed one way everywhere.

Pure string functions, no I/O. One parser for each thing a person or a client writes:

* ``parse_ip_literal`` tells an address from a hostname. It accepts every IPv4 spelling
  ``inet_aton`` accepts (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``) and IPv6 with
  brackets and zone ids. A host whose last label is a number but which is not a valid address
  (``1.2.3.4.5``, ``0x``, ``08``, ``256.1.1.1``) is *neither*: parsers disagree about such strings
  (glibc sends ``0x`` to DNS, a browser reads it as ``0.0.0.0``), so it raises ``ValueError``
  and the caller denies it.
* ``normalise_host``: the one canonical spelling hosts are compared in: lowercase, IDNA
  (punycode) for non-ASCII names, no trailing dot, IP literals in canonical form (so
  ``0x7f.1`` and ``127.0.0.1`` are the same host).
* ``split_hostport``: THE host:port parser: listen and admin addresses, nameservers, CONNECT
  targets and Host headers all go through it (``[v6]:port``, ``host:port``, a bare host with a
  default port, a bare IPv6 address). ``parse_nameserver``, ``parse_listen_address`` and
  ``authority`` are its three readings.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TypeAlias

import idna

__all__ = [
    "IPAddress",
    "authority",
    "host_header",
    "is_host_name",
    "is_ip_literal",
    "listen_addresses",
    "normalise_host",
    "parse_ip_literal",
    "parse_listen_address",
    "parse_nameserver",
    "split_hostport",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

# -- IP literals -------------------------------------------------------------------------------

_DEC = frozenset("0123456789")
_OCT = frozenset("01234567")
_HEX = frozenset("0123456789abcdefABCDEF")
_ZONE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")


def parse_ip_literal(host: str) -> IPAddress | None:
    """Return the address ``host`` spells, ``None`` if it is a hostname.

    Raises ``ValueError`` (with a message fit to show) when ``host`` is neither: empty, holds
    whitespace or control characters, is a bracketed or ``:``/``%``-bearing string that is not
    IPv6, or ends in a numeric label without being an address ``inet_aton`` accepts. A host
    ending in a number cannot be a real DNS name (no top-level domain is numeric), so refusing
    it loses nothing and closes every gap between parsers. IPv6 zone ids may be written
    ``%eth0`` or, as in URLs (RFC 6874), ``%25eth0``; they are kept on the address.
    """
    if not host:
        raise ValueError("the host is empty")
    if any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in host):
        raise ValueError(f"{host!r} contains whitespace or control characters")
    if host.startswith("[") or host.endswith("]"):
        if not (host.startswith("[") and host.endswith("]")):
            raise ValueError(f"{host} has unbalanced brackets")
        return _parse_ipv6(host[1:-1], host)
    if ":" in host or "%" in host:
        return _parse_ipv6(host, host)
    if not _ends_in_number(host):
        return None
    value = _inet_aton(host)
    if value is None:
        raise ValueError(f"{host} looks like an IPv4 address but is not a valid one")
    return ipaddress.IPv4Address(value)


def _parse_ipv6(text: str, original: str) -> ipaddress.IPv6Address:
    addr, percent, zone = text.partition("%")
    if percent:
        if zone.startswith("25") and len(zone) > 2:
            zone = zone[2:]  # URL form: "%25" is an escaped "%"
        if not zone or not set(zone) <= _ZONE:
            raise ValueError(f"{original} has an invalid IPv6 zone id")
    try:
        ip = ipaddress.IPv6Address(addr)
    except ipaddress.AddressValueError:
        raise ValueError(f"{original} is not a valid IPv6 address") from None
    return ipaddress.IPv6Address(f"{ip.compressed}%{zone}") if percent else ip


def _ends_in_number(host: str) -> bool:
    """Whether the last label (ignoring one trailing dot) is decimal digits or 0x-hex."""
    labels = host.split(".")
    last = labels[-2] if labels[-1] == "" and len(labels) > 1 else labels[-1]
    if not last:
        return False
    if set(last) <= _DEC:
        return True
    return last[:2] in ("0x", "0X") and set(last[2:]) <= _HEX


def _inet_aton(text: str) -> int | None:
    """glibc/musl ``inet_aton``: 1-4 parts, each decimal, 0-octal or 0x-hex; the last fills the rest."""
    parts = text.split(".")
    if len(parts) > 4:
        return None
    values = []
    for part in parts:
        value = _aton_part(part)
        if value is None:
            return None
        values.append(value)
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    result = 0
    for v in head:
        result = result << 8 | v
    return result << (8 * (4 - len(head))) | last


def _aton_part(part: str) -> int | None:
    # Characters are checked before int(): int() would also take "_", "+" and Unicode digits.
    if part[:2] in ("0x", "0X"):
        digits = part[2:]
        return int(digits, 16) if digits and set(digits) <= _HEX else None
    if part.startswith("0"):
        return int(part, 8) if set(part) <= _OCT else None
    return int(part) if part and set(part) <= _DEC else None


def is_ip_literal(text: str) -> bool:
    """True for an IP literal; False for a host name and for what is neither ("host:443")."""
    try:
        return parse_ip_literal(text) is not None
    except ValueError:
        return False


def is_host_name(host: str) -> bool:
    """True for a host name egress resolves (not an IP literal, not malformed)."""
    try:
        return parse_ip_literal(host) is None
    except ValueError:
        return False


# -- host names --------------------------------------------------------------------------------

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


def normalise_host(host: str) -> str:
    """Return the canonical spelling of `host`, or raise ValueError saying what is wrong."""
    text = host.strip()
    if not text:
        raise ValueError("empty host")
    # parse_ip_literal takes "[v6]" itself and refuses brackets around anything else
    # ("[example.com]" is not a host spelling any client should send).
    address = parse_ip_literal(text)
    if address is not None:
        return str(address)
    if text.endswith("."):
        text = text[:-1]
    if text.isascii():
        text = text.lower()
    else:
        try:
            text = idna.encode(text, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"not a valid internationalised host name ({exc})") from exc
    if len(text) > 253:
        raise ValueError("host name longer than 253 characters")
    for label in text.split("."):
        if not _LABEL.match(label):
            raise ValueError(f"label {label!r} is not a valid DNS label")
    return text


# -- host:port ---------------------------------------------------------------------------------

def split_hostport(text: str, default_port: int | None = None, *,
                   lowest_port: int = 1) -> tuple[str, int]:
    """(host as written, port) of ``[v6]:port``, ``[v6]``, ``host:port``, ``host`` or a bare
    IPv6 address (two or more ':' and no brackets: all host). Without ``default_port`` a port
    is required. Raises ValueError saying what to write; the host is not checked here.
    """
    host, port_text = text, ""
    if text.startswith("["):
        inner, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("write [IPv6]:port, e.g. [::1]:5353")
        host, port_text = inner, rest[1:]
        if rest and not port_text:
            raise ValueError("the port is missing after ':'")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text:
            raise ValueError("the port is missing after ':'")
    if not port_text:
        if default_port is None:
            raise ValueError("the port is missing; write HOST:PORT, e.g. 127.0.0.1:8080 or "
                             "[::1]:8080")
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit()) or not (
            lowest_port <= int(port_text) <= 65535):
        raise ValueError(f"the port must be a number from {lowest_port} to 65535")
    return host, int(port_text)


def parse_nameserver(text: str) -> tuple[str, int]:
    """``"1.2.3.4"``, ``"127.0.0.1:5353"``, ``"::1"`` or ``"[::1]:5353"`` -> (address, port)."""
    try:
        host, port = split_hostport(text, 53)
    except ValueError as exc:
        raise ValueError(f"nameserver {text!r}: {exc}") from None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"nameserver {text!r} must be an IP address, optionally with :port") from None
    return str(address), port


def parse_listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` of an address egress listens on (port 0: any free port; an empty host:
    every interface). Raises ValueError saying what to write."""
    host, port = split_hostport(text, lowest_port=0)
    if host:
        try:
            parse_ip_literal(host)
        except ValueError as exc:
            raise ValueError(f"{exc}; write HOST:PORT, e.g. 127.0.0.1:8080") from None
    return host, port


def authority(text: str, default_port: int) -> tuple[str, int] | None:
    """(normalised host, port) named by a Host header or authority; None when malformed."""
    try:
        host, port = split_hostport(text.strip(), default_port, lowest_port=0)
        return normalise_host(host), port
    except ValueError:
        return None


def host_header(scheme: str, host: str, port: int) -> str:
    """The Host header naming (host, port): the port only when not the scheme's default."""
    name = f"[{host}]" if ":" in host else host
    return name if {"http": 80, "https": 443}.get(scheme) == port else f"{name}:{port}"


def listen_addresses(host: str, port: int) -> frozenset[tuple[IPAddress, int]]:
    """egress's own listening addresses, which no skill may be proxied back to."""
    hosts = (host,) if host else ("0.0.0.0", "::")  # empty listen_host: every interface
    return frozenset((ip, port) for ip in map(parse_ip_literal, hosts) if ip is not None)
