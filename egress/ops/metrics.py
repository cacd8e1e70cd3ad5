"""Counters, gauges and a latency histogram, rendered in the Prometheus text format.

The addon counts events as they happen (`Metrics.decision`, `.dns`, `.bytes`, `.latency`);
state that already lives elsewhere (policy digest, reload results, secret-cache statistics,
audit-writer counters, open connections) is read at scrape time into a `Snapshot`, so there
is one source of truth for each number.

Labels are bounded, because an operator's Prometheus must survive a skill that tries a
million host names:
- skills come from authenticated tokens (a finite list); reasons and decisions are closed sets;
- host names appear only in `egress_denied_hosts_total`, for denials of authenticated skills,
  and only for the first `max_denied_hosts` distinct hosts; later ones count as host="_other";
- every family stops creating series at `max_series` and folds the rest into "_other".
Never a URL, a path, a query string, a token or a secret in a label.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from egress.ops.activity import Timeline
from egress.secrets.cache import CacheStats

__all__ = ["LATENCY_BUCKETS", "Metrics", "ShipStatus", "Snapshot", "render_family"]

OTHER = "_other"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
_AUTH_REASONS = frozenset({"auth_required", "auth_invalid"})


class _Family:
    """One metric name: a value per label tuple, at most `max_series` tuples."""

    def __init__(self, name: str, kind: str, help: str, labels: tuple[str, ...],
                 max_series: int) -> None:
        self.name, self.kind, self.help, self.labels = name, kind, help, labels
        self.max_series = max_series
        self.values: dict[tuple[str, ...], float] = {}

    def key(self, values: tuple[str, ...]) -> tuple[str, ...]:
        values = tuple(v[:253] for v in values)
        if values in self.values or len(self.values) < self.max_series:
            return values
        return (OTHER,) * len(values)

    def inc(self, *values: str, amount: float = 1.0) -> None:
        key = self.key(values)
        self.values[key] = self.values.get(key, 0.0) + amount

    def samples(self) -> Iterator[tuple[str, tuple[tuple[str, str], ...], float]]:
        for key in sorted(self.values):
            yield self.name, tuple(zip(self.labels, key, strict=True)), self.values[key]


class _Histogram(_Family):
    def __init__(self, name: str, help: str, labels: tuple[str, ...], max_series: int,
                 buckets: tuple[float, ...]) -> None:
        super().__init__(name, "histogram", help, labels, max_series)
        self.buckets = buckets
        self.counts: dict[tuple[str, ...], list[int]] = {}
        self.sums: dict[tuple[str, ...], float] = {}

    def observe(self, *values: str, value: float) -> None:
        key = self.key(values)
        self.values.setdefault(key, 0.0)  # reserves the series for key()
        counts = self.counts.setdefault(key, [0] * (len(self.buckets) + 1))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
        self.sums[key] = self.sums.get(key, 0.0) + value

    def samples(self) -> Iterator[tuple[str, tuple[tuple[str, str], ...], float]]:
        for key in sorted(self.counts):
            labels = tuple(zip(self.labels, key, strict=True))
            running = 0
            for bound, n in zip((*self.buckets, math.inf), self.counts[key], strict=True):
                running += n
                yield f"{self.name}_bucket", (*labels, ("le", _number(bound))), running
            yield f"{self.name}_sum", labels, self.sums[key]
            yield f"{self.name}_count", labels, running


@dataclass(frozen=True)
class ShipStatus:
    """One audit shipping destination (settings.audit.ship), read at scrape time."""

    destination: str  # its name: syslog://HOST:PORT, the URL without query, or `name:`
    shipped: int = 0  # lines the destination confirmed
    failed: int = 0  # attempts that failed (each is retried)
    dropped: int = 0  # lines dropped unshipped because the spool was full (each audited)
    depth: int = 0  # lines in the spool not yet confirmed
    lag: float = 0.0  # seconds since the oldest of them was written (0 when none)


@dataclass(frozen=True)
class Snapshot:
    """State read from the running proxy at scrape time."""

    policy_digest: str | None = None
    reloads_ok: int = 0
    reloads_failed: int = 0
    reload_failing: bool = False  # the last reload attempt was rejected
    open_connections: Mapping[str, int] = field(default_factory=dict)  # skill ("" = not yet known)
    secrets: CacheStats | None = None  # a copy of the secret cache's counters
    audit_lines: int = 0
    audit_write_errors: int = 0
    audit_rotations: int = 0
    audit_folded: int = 0  # denials folded into summary lines by the audit budget
    audit_summaries: int = 0  # summary lines written for them
    token_store_ok: bool = True
    # settings.connections in force ("request_head_timeout_seconds": 20, ...) and how many
    # open connections have not authenticated yet.
    connection_limits: Mapping[str, float] = field(default_factory=dict)
    unauthenticated_connections: int | None = None
    # (skill, credential, field) -> age in seconds of the secret's current value, and
    # whether it is older than settings.secrets.max_age (from the last status check).
    secret_ages: Mapping[tuple[str, str, str], float] = field(default_factory=dict)
    secrets_too_old: Mapping[tuple[str, str, str], bool] = field(default_factory=dict)
    oauth_grants: Mapping[str, int] = field(default_factory=dict)  # tokens minted by grant
    shipping: tuple[ShipStatus, ...] = ()
    spool_errors: int = 0  # lines that could not be appended to the spool (disk full)
    open_files: int | None = None  # file descriptors open, against the soft limit:
    open_files_limit: int | None = None


class Metrics:
    """What the proxy counts. One instance per process; the addon feeds it."""

    def __init__(self, *, max_denied_hosts: int = 200, max_series: int = 5000) -> None:
        self.max_denied_hosts = max_denied_hosts
        self.decisions = _Family(
            "egress_decisions_total", "counter",
            "Decisions by skill, decision (allow, deny, report) and reason code.",
            ("skill", "decision", "reason"), max_series)
        self.denied_hosts = _Family(
            "egress_denied_hosts_total", "counter",
            f"Denials by skill and host (the first {max_denied_hosts} hosts; the rest as "
            f"host=\"{OTHER}\").", ("skill", "host"), max_series)
        self.auth_failures = _Family(
            "egress_auth_failures_total", "counter",
            "Requests refused with 407, by reason (auth_required, auth_invalid).",
            ("reason",), max_series)
        self.dns_lookups = _Family(
            "egress_dns_lookups_total", "counter",
            "Host names egress resolved before dialling (answers from its DNS cache included).",
            (), 1)
        self.dns_failures = _Family(
            "egress_dns_failures_total", "counter",
            "Host names that could not be resolved (reason dns_failure).", (), 1)
        self.bytes = _Family(
            "egress_bytes_total", "counter",
            "Bytes received on skills' proxy connections, by skill and direction: out = sent by "
            "the skill, in = sent by upstreams (TLS tunnels: encrypted bytes). skill=\"\" for "
            "connections that never authenticated.", ("skill", "direction"), max_series)
        self.latency = _Histogram(
            "egress_decision_seconds",
            "Time from a CONNECT or request reaching egress to its decision applied "
            "(authentication, policy, DNS and credential fetch included).",
            ("kind",), 16, LATENCY_BUCKETS)
        self._hosts: set[str] = set()
        self.timeline = Timeline()  # requests and denials per skill per minute (the console)

    # -- events --------------------------------------------------------------------------
    def decision(self, verdict: str, reason: str, skill: str | None, host: str | None) -> None:
        self.decisions.inc(skill or "", verdict, reason)
        self.timeline.count(skill, verdict)
        if reason in _AUTH_REASONS:
            self.auth_failures.inc(reason)
        if verdict == "deny" and host and skill:
            # Only for authenticated skills: an anonymous client must not be able to fill the
            # host cap and push the hosts real skills tried into "_other".
            self.denied_hosts.inc(skill, self._host_label(host))

    def dns(self, *, failed: bool) -> None:
        self.dns_lookups.inc()
        if failed:
            self.dns_failures.inc()

    def add_bytes(self, skill: str | None, direction: str, count: int) -> None:
        self.bytes.inc(skill or "", direction, amount=count)

    def observe_latency(self, kind: str, seconds: float) -> None:
        self.latency.observe(kind, value=seconds)

    def _host_label(self, host: str) -> str:
        if host in self._hosts:
            return host
        if len(self._hosts) >= self.max_denied_hosts:
            return OTHER
        self._hosts.add(host)
        return host

    # -- exposition ----------------------------------------------------------------------
    def render(self, snap: Snapshot) -> str:
        """The Prometheus text format (version 0.0.4) of everything, counters and snapshot."""
        families: list[_Family] = [self.decisions, self.denied_hosts, self.auth_failures,
                                   self.dns_lookups, self.dns_failures, self.bytes, self.latency]
        families.extend(_snapshot_families(snap))
        return "".join(render_family(f) for f in families)


def _snapshot_families(snap: Snapshot) -> Iterable[_Family]:
    def one(name: str, kind: str, help: str, value: float,
            labels: tuple[tuple[str, str], ...] = ()) -> _Family:
        fam = _Family(name, kind, help, tuple(k for k, _ in labels), 1)
        fam.values[tuple(v for _, v in labels)] = value
        return fam

    if snap.policy_digest is not None:
        yield one("egress_policy_info", "gauge", "The policy in force (digest as in audit lines).",
                  1, (("digest", snap.policy_digest),))
    reloads = _Family("egress_policy_reloads_total", "counter",
                      "Policy reloads by result; a failed one keeps the running policy.",
                      ("result",), 2)
    reloads.values = {("ok",): snap.reloads_ok, ("failed",): snap.reloads_failed}
    yield reloads
    yield one("egress_policy_reload_failing", "gauge",
              "1 while the policy files on disk are invalid (the last reload was rejected).",
              int(snap.reload_failing))
    conns = _Family("egress_open_connections", "gauge",
                    "Client connections open, by skill (\"\" = not authenticated yet).",
                    ("skill",), 10_000)
    conns.values = {(skill,): n for skill, n in snap.open_connections.items()}
    yield conns
    if snap.secrets is not None:
        s = snap.secrets
        yield one("egress_secret_fetches_total", "counter",
                  "Secret-manager fetches (cache misses).", s.fetches)
        yield one("egress_secret_fetch_failures_total", "counter",
                  "Secret-manager fetches that failed.", s.failures)
        yield one("egress_secret_cache_hits_total", "counter",
                  "Secrets served fresh from egress's cache.", s.hits)
        yield one("egress_secret_stale_uses_total", "counter",
                  "Secrets served stale (secret manager down, inside the grace window).",
                  s.stale_uses)
    yield one("egress_audit_lines_total", "counter", "Audit lines written.", snap.audit_lines)
    yield one("egress_audit_write_errors_total", "counter",
              "Audit lines that could not be written (disk full, permissions).",
              snap.audit_write_errors)
    yield one("egress_audit_rotations_total", "counter", "Audit log rotations.",
              snap.audit_rotations)
    yield one("egress_audit_folded_total", "counter",
              "Denials past a skill's audit budget folded into summary lines (each counted "
              "there, none written on its own line).", snap.audit_folded)
    yield one("egress_audit_summaries_total", "counter",
              "Summary lines of folded denials written.", snap.audit_summaries)
    if snap.connection_limits:
        limits = _Family("egress_connection_limit", "gauge",
                         "Connection timeouts (seconds) and caps in force (settings.connections); "
                         "each close they cause is audited with its reason.", ("limit",), 16)
        limits.values = {(name,): value for name, value in snap.connection_limits.items()}
        yield limits
    if snap.unauthenticated_connections is not None:
        yield one("egress_unauthenticated_connections", "gauge",
                  "Open client connections that have not authenticated yet (all addresses).",
                  snap.unauthenticated_connections)
    if snap.secret_ages:
        ages = _Family("egress_secret_age_seconds", "gauge",
                       "Seconds since each brokered secret last changed, as its secret manager "
                       "says (checked every few minutes; no series where it has no time).",
                       ("skill", "credential", "field"), 10_000)
        ages.values = {tuple(k): v for k, v in snap.secret_ages.items()}
        yield ages
    if snap.secrets_too_old:
        old = _Family("egress_secret_too_old", "gauge",
                      "1 for a brokered secret older than settings.secrets.max_age.",
                      ("skill", "credential", "field"), 10_000)
        old.values = {k: int(v) for k, v in snap.secrets_too_old.items()}
        yield old
    if snap.oauth_grants:
        grants = _Family("egress_oauth_tokens_minted_total", "counter",
                         "OAuth 2.0 access tokens egress minted, by grant type.", ("grant",), 4)
        grants.values = {(g,): n for g, n in snap.oauth_grants.items()}
        yield grants
    if snap.shipping:
        yield from _shipping_families(snap)
    if snap.open_files is not None and snap.open_files_limit is not None:
        yield one("egress_open_files", "gauge",
                  "File descriptors egress holds open (each client connection one, a "
                  "passthrough tunnel two).", snap.open_files)
        yield one("egress_open_files_limit", "gauge",
                  "The soft RLIMIT_NOFILE (raised to the hard limit at start); accepts fail "
                  "once egress_open_files reaches it.", snap.open_files_limit)
    yield one("egress_token_store_ok", "gauge",
              "0 while tokens.json is unreadable (every skill is refused until it is fixed).",
              int(snap.token_store_ok))


def _shipping_families(snap: Snapshot) -> Iterable[_Family]:
    rows = (("egress_audit_shipped_total", "counter",
             "Audit lines each shipping destination confirmed.", "shipped"),
            ("egress_audit_ship_failures_total", "counter",
             "Shipping attempts that failed (the lines wait in the spool and are retried).",
             "failed"),
            ("egress_audit_ship_dropped_total", "counter",
             "Audit lines dropped before they were shipped because the spool was full "
             "(settings.audit.spool_max_bytes); each drop is also an audit line.", "dropped"),
            ("egress_audit_spool_lines", "gauge",
             "Audit lines in the spool that the destination has not confirmed yet.", "depth"),
            ("egress_audit_ship_lag_seconds", "gauge",
             "Age of the oldest audit line the destination has not confirmed (0: none).", "lag"))
    for name, kind, help, attr in rows:
        fam = _Family(name, kind, help, ("destination",), 1000)
        fam.values = {(s.destination,): float(getattr(s, attr)) for s in snap.shipping}
        yield fam
    fam = _Family("egress_audit_spool_errors_total", "counter",
                  "Audit lines that could not be appended to the spool (disk full, "
                  "permissions): no destination gets them.", (), 1)
    fam.values = {(): snap.spool_errors}
    yield fam


def render_family(fam: _Family) -> str:
    lines = [f"# HELP {fam.name} {_escape_help(fam.help)}", f"# TYPE {fam.name} {fam.kind}"]
    for name, labels, value in fam.samples():
        text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
        lines.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")
