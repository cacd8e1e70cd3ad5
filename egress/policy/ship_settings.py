"""``settings.audit.ship``: where audit lines are sent off the host, as plain data (pure).

    settings:
      audit:
        ship:
          - syslog: {address: "logs.example.net:6514", tls: true, ca: certs/logs-ca.pem}
          - http:
              url: https://loki.example.net/loki/api/v1/push
              format: loki                 # jsonl (default) | loki | ocsf
              token: "env:LOKI_TOKEN"      # a secret reference, sent as Authorization: Bearer
              headers: {X-Scope-OrgID: egress}
        spool_max_bytes: 256MiB            # the spool of unshipped lines, all destinations
        ship_degraded_after: 5m            # /readyz says degraded past this lag

Each destination is independent: its own cursor in the spool, its own retries and metrics.
``name`` (optional) labels it in metrics and names its cursor; by default it is the
destination's address (``syslog://HOST:PORT``, or the URL without query or user info).
``ca`` paths are relative to the policy file. Tokens never belong in the file: ``token`` is a
reference (vault:, env:, file:, ...), resolved by egress/secrets when a batch is sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import yaml

from egress.policy.hosts import normalise_host, parse_ip_literal, split_hostport
from egress.policy.secret_refs import SecretRef, parse_secret_ref
from egress.policy.yamlnodes import NodeReader

__all__ = ["Destination", "HttpDestination", "ShipFormat", "SyslogDestination",
           "read_destinations"]

ShipFormat = Literal["jsonl", "loki", "ocsf"]
FORMATS: tuple[ShipFormat, ...] = ("jsonl", "loki", "ocsf")
_SYSLOG_KEYS = ("address", "tls", "ca", "name")
_HTTP_KEYS = ("url", "format", "headers", "token", "ca", "name", "batch")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers egress sets itself; Authorization comes from `token` so it is never in the file.
_RESERVED_HEADERS = frozenset({"authorization", "content-type", "content-length", "host",
                               "content-encoding", "transfer-encoding", "connection"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,199}$")


@dataclass(frozen=True)
class SyslogDestination:
    """RFC 5424 over TCP with octet-counting framing (RFC 6587), optionally in TLS."""

    name: str
    host: str
    port: int
    tls: bool = False
    ca: str | None = None  # absolute path of the CA file that verifies the receiver


@dataclass(frozen=True)
class HttpDestination:
    """Batched POSTs: JSON Lines, Loki's push API or OCSF events (one per line)."""

    name: str
    url: str
    format: ShipFormat = "jsonl"
    headers: tuple[tuple[str, str], ...] = ()
    token: SecretRef | None = None  # sent as Authorization: Bearer <value>
    ca: str | None = None
    batch: int = 500  # lines per POST at most


Destination = SyslogDestination | HttpDestination


def read_destinations(reader: NodeReader, file: str, node: yaml.Node) -> tuple[Destination, ...]:
    """The `ship:` list; problems go to `reader` as file:line errors."""
    out: list[Destination] = []
    names: set[str] = set()
    for i, item in reader.items(file, node, "settings.audit.ship"):
        where = f"settings.audit.ship[{i}]"
        fields = reader.mapping(file, item, where, ("syslog", "http"))
        if fields is None:
            continue
        if len(fields) != 1:
            reader.error(file, item, where, "name exactly one destination: syslog: {...} "
                                            "or http: {...}")
            continue
        kind, (_, body) = next(iter(fields.items()))
        dest: Destination | None = (_syslog(reader, file, body, f"{where}.syslog")
                                    if kind == "syslog" else
                                    _http(reader, file, body, f"{where}.http"))
        if dest is None:
            continue
        if dest.name in names:
            reader.error(file, item, where, f"destination {dest.name!r} is listed twice; "
                                            f"give one of them another `name`")
            continue
        names.add(dest.name)
        out.append(dest)
    return tuple(out)


def _syslog(reader: NodeReader, file: str, node: yaml.Node,
            where: str) -> SyslogDestination | None:
    fields = reader.mapping(file, node, where, _SYSLOG_KEYS)
    if fields is None:
        return None
    if "address" not in fields:
        reader.error(file, node, where, "needs address: HOST:PORT (e.g. logs.example.net:6514)")
        return None
    address = reader.parsed(file, fields["address"][1], f"{where}.address", _address)
    tls = False
    if "tls" in fields:
        tls = bool(reader.scalar(file, fields["tls"][1], f"{where}.tls", bool, "true or false"))
    ca = _ca(reader, file, fields, where)
    if ca is not None and not tls:
        reader.error(file, fields["ca"][1], f"{where}.ca", "only used with tls: true")
    if address is None:
        return None
    host, port = address
    label = f"[{host}]" if ":" in host else host
    name = _name(reader, file, fields, where) or f"syslog://{label}:{port}"
    return SyslogDestination(name=name, host=host, port=port, tls=tls, ca=ca)


def _http(reader: NodeReader, file: str, node: yaml.Node, where: str) -> HttpDestination | None:
    fields = reader.mapping(file, node, where, _HTTP_KEYS)
    if fields is None:
        return None
    if "url" not in fields:
        reader.error(file, node, where, "needs url: http(s)://HOST[:PORT]/PATH")
        return None
    url = reader.parsed(file, fields["url"][1], f"{where}.url", _url)
    fmt: ShipFormat = "jsonl"
    if "format" in fields:
        fmt = reader.parsed(file, fields["format"][1], f"{where}.format", _format) or fmt
    headers: list[tuple[str, str]] = []
    if "headers" in fields:
        for key, (key_node, value_node) in (
                reader.mapping(file, fields["headers"][1], f"{where}.headers", None) or {}).items():
            value = reader.scalar(file, value_node, f"{where}.headers.{key}", str, "a string")
            if not _HEADER_NAME.match(key):
                reader.error(file, key_node, f"{where}.headers.{key}", "not a valid header name")
            elif key.lower() in _RESERVED_HEADERS:
                hint = ("put a secret reference in `token:` instead" if key.lower() ==
                        "authorization" else "egress sets it itself")
                reader.error(file, key_node, f"{where}.headers.{key}", f"not allowed here: {hint}")
            elif value is not None and any(c in value for c in "\r\n\0"):
                reader.error(file, value_node, f"{where}.headers.{key}",
                             "must not contain CR, LF or NUL")
            elif value is not None:
                headers.append((key, value))
    token = None
    if "token" in fields:
        token = reader.parsed(file, fields["token"][1], f"{where}.token", parse_secret_ref)
    batch = 500
    if "batch" in fields:
        n = reader.scalar(file, fields["batch"][1], f"{where}.batch", int, "a whole number")
        if n is not None and not 1 <= n <= 10_000:
            reader.error(file, fields["batch"][1], f"{where}.batch",
                         "must be between 1 and 10000 (lines per POST)")
        elif n is not None:
            batch = n
    ca = _ca(reader, file, fields, where)
    if url is None:
        return None
    if token is not None and url.startswith("http://") and not _loopback_url(url):
        reader.error(file, fields["token"][1], f"{where}.token",
                     "a token is only sent over https (or to a loopback address); "
                     "use an https:// url")
    name = _name(reader, file, fields, where) or _url_label(url)
    return HttpDestination(name=name, url=url, format=fmt, headers=tuple(headers), token=token,
                           ca=ca, batch=batch)


def _name(reader: NodeReader, file: str, fields: dict[str, tuple[yaml.Node, yaml.Node]],
          where: str) -> str | None:
    if "name" not in fields:
        return None
    name = reader.scalar(file, fields["name"][1], f"{where}.name", str, "a string")
    if name is not None and not _NAME.match(name):
        reader.error(file, fields["name"][1], f"{where}.name",
                     "letters, digits and . _ : / @ - only (it labels metrics)")
        return None
    return name


def _ca(reader: NodeReader, file: str, fields: dict[str, tuple[yaml.Node, yaml.Node]],
        where: str) -> str | None:
    if "ca" not in fields:
        return None
    text = reader.scalar(file, fields["ca"][1], f"{where}.ca", str, "a path to a PEM file")
    if text is None:
        return None
    path = Path(file).parent / text
    if not path.is_file():
        reader.error(file, fields["ca"][1], f"{where}.ca",
                     f"{path} does not exist; give a PEM file, relative to {file}")
        return None
    return str(path.resolve())


def _address(text: str) -> tuple[str, int]:
    host, port = split_hostport(text)
    if parse_ip_literal(host) is None:
        normalise_host(host)  # raises ValueError saying what is wrong with the name
    return host, port


def _url(text: str) -> str:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        raise ValueError("not a URL; write http(s)://HOST[:PORT]/PATH") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("no user or password in the URL: use token: REF")
    if parts.fragment:
        raise ValueError("no #fragment in the URL")
    return text


def _format(text: str) -> ShipFormat:
    for fmt in FORMATS:
        if text == fmt:
            return fmt
    raise ValueError(f"unknown format {text!r}; use one of: {', '.join(FORMATS)}")


def _url_label(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        ip = parse_ip_literal(host)
    except ValueError:
        return False
    return ip is not None and ip.is_loopback
