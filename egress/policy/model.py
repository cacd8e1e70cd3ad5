"""The policy as plain, frozen data: what the loader builds and what decide() reads.

Nothing here does I/O or knows about YAML or mitmproxy. Hosts are stored normalised
(lowercase, IDNA, no trailing dot; IP literals in canonical form).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from egress.policy.secret_refs import SecretRef
from egress.policy.secret_settings import SecretSettings
from egress.policy.shapes import AwsSigV4, BasicAuth, OAuth2, Shape
from egress.policy.ship_settings import Destination

__all__ = [
    "Approval",
    "ApprovalNotify",
    "ApprovalSettings",
    "AuditSettings",
    "ConnectionSettings",
    "Credential",
    "DnsSettings",
    "HostIndex",
    "IPNetwork",
    "Limits",
    "Mode",
    "NetworkSettings",
    "RefUse",
    "PolicySet",
    "Rule",
    "SKILL_NAME",
    "Settings",
    "SkillPolicy",
    "Source",
    "WebSocketSettings",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A skill's name is its proxy user name: no ':' (Basic auth), nothing a shell or YAML mangles.
SKILL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Mode(StrEnum):
    ENFORCE = "enforce"  # deny what the policy does not allow
    REPORT = "report"  # allow it, but audit what would have been denied


@dataclass(frozen=True)
class Source:
    """Where a piece of policy was written, for error messages and the audit `rule` field."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Limits:
    """Rate limits of a skill or of one rule; None means "no limit" for that dimension."""

    requests_per_minute: int | None = None  # CONNECTs plus requests egress sees
    concurrent_connections: int | None = None  # client connections open at once


@dataclass(frozen=True)
class Approval:
    """`approval:` on a rule: a person approves each request before it is forwarded."""

    wait: float = 20.0  # seconds a request is held while a person decides (then 428)
    valid_for: float = 600.0  # seconds a decision stands (and a pending approval stays open)


@dataclass(frozen=True)
class Rule:
    """One `allow` entry. `host` is either an exact name or `*.suffix` (wildcard=True)."""

    host: str
    wildcard: bool
    ports: frozenset[int]
    methods: frozenset[str] | None  # None: any method
    paths: tuple[str, ...] | None  # None: any path
    credential: str | None
    source: Source
    limits: Limits | None = None  # on top of the skill's limits
    raw_tcp: bool = False  # bytes inside a CONNECT that are neither TLS nor HTTP/1 may pass
    approval: Approval | None = None  # each matching request waits for a person's approval

    @property
    def needs_interception(self) -> bool:
        """Only rules that look inside requests need TLS terminated by egress."""
        return (self.methods is not None or self.paths is not None
                or self.credential is not None or self.approval is not None)

    @property
    def label(self) -> str:
        """Short, stable name for logs: `file:line host`."""
        return f"{self.source} {'*.' if self.wildcard else ''}{self.host}"


@dataclass(frozen=True)
class RefUse:
    """One secret reference a credential reads, and where the policy names it."""

    field: str  # "secret", "aws_sigv4.access_key_id", "oauth2.client_secret", ...
    ref: SecretRef
    source: Source


@dataclass(frozen=True)
class Credential:
    """A brokered credential. Its shape (egress/policy/shapes.py) says how it travels: in a
    header (default; `header` and `format`), a query parameter, HTTP Basic, an AWS SigV4
    signature, or a minted OAuth 2.0 token. At most one of query/basic/aws/oauth2 is set."""

    name: str
    # Where the key lives ("vault:secret/skills/x#api_key"), never a value. aws_sigv4: the
    # secret access key; oauth2: the client secret.
    secret: SecretRef
    header: str
    format: str  # contains "{secret}" exactly once
    placeholder: str | None
    source: Source
    query: str | None = None  # the query parameter that carries the key
    basic: BasicAuth | None = None
    aws: AwsSigV4 | None = None
    oauth2: OAuth2 | None = None
    # Every reference it reads (secret first), with its line: derived, not compared.
    refs: tuple[RefUse, ...] = field(default=(), compare=False)

    @property
    def shape(self) -> Shape:
        if self.query is not None:
            return "query"
        if self.basic is not None:
            return "basic"
        if self.aws is not None:
            return "aws_sigv4"
        if self.oauth2 is not None:
            return "oauth2"
        return "header"

    def all_refs(self) -> tuple[RefUse, ...]:
        """`refs`, or (a Credential built by hand) the secret alone."""
        return self.refs or (RefUse("secret", self.secret, self.source),)


class HostIndex:
    """Rules of one skill indexed by host, so a lookup costs a few dict probes, not a scan.

    Exact hosts map straight to their rules. A wildcard `*.example.com` is stored under
    `example.com`; a lookup walks the host's parent domains (at most a handful of labels).
    """

    __slots__ = ("_exact", "_suffix")

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        exact: dict[str, list[Rule]] = {}
        suffix: dict[str, list[Rule]] = {}
        for rule in rules:
            (suffix if rule.wildcard else exact).setdefault(rule.host, []).append(rule)
        self._exact = {h: tuple(r) for h, r in exact.items()}
        self._suffix = {h: tuple(r) for h, r in suffix.items()}

    def lookup(self, host: str) -> tuple[Rule, ...]:
        """Rules whose host pattern matches `host` (normalised), exact matches first."""
        found = self._exact.get(host, ())
        if self._suffix:
            # "*.example.com" matches "a.example.com" and "a.b.example.com", never "example.com".
            dot = host.find(".")
            while dot != -1:
                parent = host[dot + 1 :]
                more = self._suffix.get(parent)
                if more:
                    found = found + more
                dot = host.find(".", dot + 1)
        return found


@dataclass(frozen=True)
class SkillPolicy:
    name: str
    mode: Mode
    rules: tuple[Rule, ...]
    credentials: Mapping[str, Credential]
    source: Source
    limits: Limits | None = None
    index: HostIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", HostIndex(self.rules))


@dataclass(frozen=True)
class DnsSettings:
    nameservers: tuple[str, ...] = ()  # "host" or "host:port"; empty: the system's resolvers
    timeout: float = 3.0
    min_ttl: int = 5
    max_ttl: int = 300


@dataclass(frozen=True)
class NetworkSettings:
    allow: tuple[IPNetwork, ...] = ()  # opened despite the built-in deny list (metadata never)
    deny: tuple[IPNetwork, ...] = ()  # denied in addition to the built-in list


@dataclass(frozen=True)
class AuditSettings:
    log_allowed: bool = False  # also write a line for every allowed connection/request
    # Rotation of audit.jsonl (renamed to audit.jsonl.1 ... .N; none is ever cut mid-line).
    max_bytes: int = 100 * 2**20  # rotate before the file would grow past this; 0: never
    max_files: int = 10  # rotated files kept; older ones are deleted
    max_age: float | None = None  # seconds; rotate a file whose first line is older
    # The audit budget (egress/audit/fold.py): per skill and interval, this many denial lines in
    # full, then up to budget_distinct more (one per distinct denial); the rest are folded.
    budget: int = 60
    budget_interval: float = 60.0  # seconds
    budget_distinct: int = 100
    # Shipping off the host (egress/policy/ship_settings.py, egress/audit/ship/): destinations,
    # the bound of the spool of unshipped lines, and the lag past which /readyz says degraded.
    ship: tuple[Destination, ...] = ()
    spool_max_bytes: int = 256 * 2**20
    ship_degraded_after: float = 300.0  # seconds


@dataclass(frozen=True)
class ConnectionSettings:
    """Timeouts and caps on client connections (seconds; the cap is a connection count)."""

    request_head_timeout: float = 20.0  # first byte of a request head to its blank line
    idle_before_auth: float = 30.0  # no data on a connection that has not authenticated
    idle_timeout: float = 300.0  # no data either way on an authenticated connection
    clienthello_timeout: float = 10.0  # a tunnel's first bytes to a complete ClientHello
    max_unauthenticated_per_address: int = 256  # open, not yet authenticated, per client IP


@dataclass(frozen=True)
class WebSocketSettings:
    # A larger WebSocket message, even one still arriving in fragments, closes the connection
    # with 1009: mitmproxy holds a whole message in memory before relaying it.
    max_message: int = 4 * 2**20


@dataclass(frozen=True)
class ApprovalNotify:
    """Who is told that an approval waits. Never on the request path (errors are logged)."""

    webhook: str | None = None  # a URL, or "env:NAME" / "file:PATH" holding one (a secret)
    command: tuple[str, ...] | None = None  # argv; the approval as JSON on stdin
    timeout: float = 5.0  # seconds per notification


@dataclass(frozen=True)
class ApprovalSettings:
    notify: ApprovalNotify = ApprovalNotify()
    max_body: int = 2**20  # request bodies of approval rules are read whole, up to this
    max_pending: int = 20  # open approvals, and requests held, per skill (approval_queue_full)
    console_url: str | None = None  # the console's address as operators reach it (links)


@dataclass(frozen=True)
class Settings:
    mode: Mode = Mode.ENFORCE  # default for skills that do not set `mode`
    dns: DnsSettings = DnsSettings()
    networks: NetworkSettings = NetworkSettings()
    audit: AuditSettings = AuditSettings()
    connections: ConnectionSettings = ConnectionSettings()
    websocket: WebSocketSettings = WebSocketSettings()
    upstream_ca: str | None = None  # absolute path of extra CAs for upstream TLS
    secrets: SecretSettings | None = None
    approvals: ApprovalSettings = ApprovalSettings()
    source: Source | None = None


@dataclass(frozen=True)
class PolicySet:
    """Everything loaded from one policy directory. `digest` identifies it in audit lines."""

    skills: Mapping[str, SkillPolicy]
    settings: Settings
    digest: str
    files: tuple[str, ...]

    @property
    def rule_count(self) -> int:
        return sum(len(s.rules) for s in self.skills.values())
