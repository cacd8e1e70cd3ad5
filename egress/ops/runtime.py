"""The running state egress decides with: policy, tokens, audit writer, address guard.

One place builds it (`Runtime.create`), shared by the mitmproxy addon (`mitmdump -s`) and
`egress serve`, so both paths enforce the same thing. Reloading swaps the policy (and what is
derived from it) only after the new one validated: a bad file never replaces a good policy.

A reload applies every setting or is refused with the reason: DNS (a new resolver), networks,
secret managers and cache (a new secret cache), `upstream_ca` (checked loadable here, handed
to the proxy's settings hooks, which mitmproxy's upstream TLS and the OAuth token client read),
audit rotation and budget, connection limits, WebSocket cap and mode (read per decision).
References that cannot be read as the environment stands are logged at start and on every
reload (egress/secrets/preflight.py).

The audit writer signs checkpoints with DATA_DIR/audit-key.pem; with `settings.audit.ship`
it also appends to DATA_DIR/spool, and a Shipper thread sends from there (`start_shipping`,
at the proxy's `running`; `close` at shutdown).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from egress.audit.chain import Signer
from egress.audit.fold import Budget, DenialFolder
from egress.audit.records import AuditRecord
from egress.audit.ship.shipper import Shipper
from egress.audit.spool import Spool
from egress.audit.writer import AUDIT_FILE, AuditWriter, Rotation
from egress.errors import PolicyError, PolicyErrors, SecretUnavailable
from egress.identity import TokenStore
from egress.netguard import AddressGuard, Blocked, DnsResolver, local_interface_addresses
from egress.ops.datadir import staged_copy
from egress.policy.addresses import NetworkPolicy
from egress.policy.load import load_policy_dir
from egress.policy.model import AuditSettings, PolicySet
from egress.policy.secret_settings import SecretSettings
from egress.secrets import SecretCache, build_secret_cache
from egress.secrets.preflight import reference_problems

if TYPE_CHECKING:
    from egress.credentials.token_client import GuardedTokenEndpoint
    from egress.ops.credential_health import SecretStatus

__all__ = ["ReloadStatus", "Runtime", "SettingsHook", "flush_audit_periodically",
           "settings_problems"]


class SettingsHook(Protocol):
    """Part of the proxy that reads settings (mitmproxy's upstream TLS options). `prepare`
    checks a new policy's settings and returns the action that applies them, or raises
    ValueError saying why they cannot be applied (the reload is then refused)."""

    def __call__(self, new: PolicySet) -> Callable[[], None]: ...

log = logging.getLogger("egress")


@dataclass
class ReloadStatus:
    ok: int = 0
    failed: int = 0
    last_error: str | None = None


@dataclass
class Runtime:
    policy_dir: Path
    data_dir: Path
    policy: PolicySet
    tokens: TokenStore
    audit: AuditWriter
    guard: AddressGuard
    self_addresses: frozenset[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]
    secrets: SecretCache  # the secret cache credentials are fetched through
    reloads: ReloadStatus = field(default_factory=ReloadStatus)
    folder: DenialFolder = field(default_factory=DenialFolder)  # the audit budget
    oauth: GuardedTokenEndpoint | None = None  # egress's client for OAuth token endpoints
    settings_hooks: list[SettingsHook] = field(default_factory=list)
    secret_status: list[SecretStatus] = field(default_factory=list)  # for /metrics
    shipper: Shipper | None = None  # sends audit lines off the host (settings.audit.ship)
    _shipping: bool = False  # start_shipping was called

    @classmethod
    def create(
        cls,
        policy_dir: str | os.PathLike[str],
        data_dir: str | os.PathLike[str],
        *,
        self_addresses: frozenset[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = frozenset(),
        audit_path: str | None = None,
        policy: PolicySet | None = None,
    ) -> Runtime:
        """Load and validate everything; raises PolicyErrors before anything starts.
        `policy`: the directory's policy, already loaded (saves a second parse at startup)."""
        data = Path(data_dir)
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        policy = policy or load_policy_dir(policy_dir)
        dns = policy.settings.dns
        resolver = DnsResolver(dns.nameservers, timeout=dns.timeout, min_ttl=dns.min_ttl,
                               max_ttl=dns.max_ttl)
        guard = AddressGuard(resolver, _networks(policy, self_addresses))
        problems = settings_problems(policy)
        if problems:
            raise PolicyErrors(problems)
        writer = AuditWriter(audit_path or data / AUDIT_FILE, _rotation(policy),
                             signer=_signer(data))
        runtime = cls(
            policy_dir=Path(policy_dir), data_dir=data, policy=policy,
            tokens=TokenStore(data), audit=writer,
            guard=guard, self_addresses=self_addresses,
            secrets=build_secret_cache(policy.settings.secrets or SecretSettings()),
            folder=DenialFolder(_budget(policy)),
        )
        runtime.oauth = runtime._token_client(policy)
        log_reference_problems(policy)
        runtime._configure_shipping(policy)
        return runtime

    def _token_client(self, policy: PolicySet) -> GuardedTokenEndpoint | None:
        if not any(c.oauth2 is not None for s in policy.skills.values()
                   for c in s.credentials.values()):
            return None
        from egress.credentials.token_client import GuardedTokenEndpoint  # aiohttp

        try:
            ca = staged_copy(self.data_dir, policy.settings.upstream_ca)
        except ValueError:
            ca = policy.settings.upstream_ca  # (settings_problems refuses such a policy)
        return GuardedTokenEndpoint(self._vet_token_endpoint, upstream_ca=ca)

    async def _vet_token_endpoint(self, host: str, port: int) -> str:
        """The address guard, for egress's own calls to OAuth token endpoints."""
        vetted = await self.guard.vet(host, port)
        if isinstance(vetted, Blocked):
            raise SecretUnavailable(f"oauth2 token endpoint {host}:{port} refused by the "
                                    f"network guard ({vetted.reason}: {vetted.detail})")
        return str(vetted.ip)

    async def reload_policy_async(self) -> bool:
        """Load the policy directory again; keep the running policy if the new one is bad.
        The files are parsed in a worker thread (100,000 rules take seconds), so traffic keeps
        flowing; only the swap runs on the event loop."""
        try:
            new = await asyncio.to_thread(load_policy_dir, self.policy_dir)
        except PolicyErrors as exc:
            return self._rejected(exc)
        return self.apply_policy(new)

    def _rejected(self, exc: PolicyErrors) -> bool:
        self.reloads.failed += 1
        self.reloads.last_error = str(exc)
        for err in exc.errors:
            log.error("policy reload rejected, keeping policy %s: %s", self.policy.digest, err)
        return False

    def apply_policy(self, new: PolicySet) -> bool:
        """Swap in a validated policy and what derives from it (guard networks, secret cache,
        the proxy's settings hooks); refuse it, keeping the running one, when a setting cannot
        be applied."""
        problems = settings_problems(new)
        commits: list[Callable[[], None]] = []
        for hook in self.settings_hooks:
            try:
                commits.append(hook(new))
            except ValueError as exc:
                source = new.settings.source
                problems.append(PolicyError(source.file if source else str(self.policy_dir),
                                            source.line if source else 0, "settings",
                                            f"cannot be applied: {exc}"))
        if problems:
            return self._rejected(PolicyErrors(problems))
        if new.settings.dns != self.policy.settings.dns:
            dns = new.settings.dns
            self.guard = AddressGuard(
                DnsResolver(dns.nameservers, timeout=dns.timeout, min_ttl=dns.min_ttl,
                            max_ttl=dns.max_ttl),
                _networks(new, self.self_addresses),
            )
        else:
            self.guard.replace_networks(_networks(new, self.self_addresses))
        if new.settings.secrets != self.policy.settings.secrets:
            # New backends or cache settings: start a fresh cache; the old one's open
            # sessions are closed by the event loop's task (no I/O here).
            old_cache, self.secrets = self.secrets, build_secret_cache(
                new.settings.secrets or SecretSettings())
            _close_later(old_cache)
        # A new token client on every reload (it reads upstream_ca once; no I/O until used).
        old_client, self.oauth = self.oauth, self._token_client(new)
        if old_client is not None:
            _close_later(old_client)
        for commit in commits:
            commit()
        self.audit.rotation = _rotation(new)
        self.folder.budget = _budget(new)
        if _shipping_settings(new.settings.audit) != _shipping_settings(self.policy.settings.audit) \
                or (self.shipper is not None and new.settings.secrets != self.policy.settings.secrets):
            self._configure_shipping(new)
        old, self.policy = self.policy.digest, new
        self.reloads.ok += 1
        self.reloads.last_error = None
        if old != new.digest:
            log.info("policy reloaded: %s -> %s (%d skills, %d rules)", old, new.digest,
                     len(new.skills), new.rule_count)
            log_reference_problems(new)
        return True

    def add_self_address(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> None:
        """Another address egress answers on (the admin endpoint): never a destination."""
        self.self_addresses = self.self_addresses | {(ip, port)}
        self.guard.replace_networks(_networks(self.policy, self.self_addresses))

    def record(self, record: AuditRecord) -> None:
        """Write `record`, or fold it under the audit budget (egress/audit/fold.py)."""
        for line in self.folder.admit(record):
            self.audit.write(line)

    def flush_audit(self, *, final: bool = False) -> None:
        """Write the summaries of folded denials: those of an interval that ended, or (final,
        at shutdown) all of them."""
        for line in self.folder.flush() if final else self.folder.due():
            self.audit.write(line)

    # -- shipping ---------------------------------------------------------------------------
    def _configure_shipping(self, policy: PolicySet) -> None:
        """Point the writer at the spool and the shipper at the destinations of `policy`. The
        shipper, once made, lives until `close` (a reload without destinations idles it)."""
        a = policy.settings.audit
        if self.shipper is None:
            if not a.ship:
                return
            spool = Spool(self.data_dir / "spool", a.spool_max_bytes)
            spool.open()
            spool.register({d.name for d in a.ship})
            self.shipper = Shipper(spool, a.ship, policy.settings.secrets)
            if self._shipping:
                self.shipper.start()
        else:
            self.shipper.spool.resize(a.spool_max_bytes)
            self.shipper.configure(a.ship, policy.settings.secrets)  # forgets removed cursors
        self.audit.spool = self.shipper.spool if a.ship else None

    def start_shipping(self) -> None:
        """Start the shipping thread (the proxy is running). Idempotent."""
        self._shipping = True
        if self.shipper is not None:
            self.shipper.start()

    def close(self, *, drain: float = 3.0) -> None:
        """At shutdown: summaries of folded denials, a signed checkpoint, then up to `drain`
        seconds for the shipper to send what is left (the rest stays in the spool)."""
        self.flush_audit(final=True)
        self.audit.close()
        if self.shipper is not None:
            self.shipper.stop(timeout=drain)
            self.shipper.spool.close()


def _signer(data_dir: Path) -> Signer | None:
    try:
        return Signer.load_or_create(data_dir)
    except (OSError, ValueError) as exc:
        # The chain still links every line; only the checkpoints go unsigned. Said loudly.
        log.error("egress: audit checkpoints will not be signed: cannot read or make %s (%s)",
                  data_dir / "audit-key.pem", type(exc).__name__)
        return None


def _shipping_settings(a: AuditSettings) -> tuple[object, ...]:
    return (a.ship, a.spool_max_bytes)


class _Closable(Protocol):
    async def close(self) -> None: ...


def _close_later(thing: _Closable) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    loop.create_task(thing.close())


def settings_problems(policy: PolicySet) -> list[PolicyError]:
    """Settings that load but cannot be used: CA files that are not PEM certificates."""
    s = policy.settings
    files: list[tuple[str, str | None]] = [("settings.upstream_ca", s.upstream_ca)]
    if s.secrets is not None:
        for key in ("vault", "onepassword", "doppler"):
            backend = getattr(s.secrets, key)
            files.append((f"settings.secrets.{key}.ca_file",
                          backend.ca_file if backend is not None else None))
    out: list[PolicyError] = []
    for where, path in files:
        if path is None:
            continue
        try:
            ssl.create_default_context().load_verify_locations(cafile=path)
        except (OSError, ssl.SSLError) as exc:
            out.append(PolicyError(s.source.file if s.source else "", s.source.line
                                   if s.source else 0, where,
                                   f"{path}: not a readable PEM file of CA certificates "
                                   f"({type(exc).__name__})"))
    return out


def log_reference_problems(policy: PolicySet) -> None:
    """Each reference that cannot be read as the environment stands: one log line."""
    for problem in reference_problems(policy):
        log.error("secret reference: %s", problem)


def _rotation(policy: PolicySet) -> Rotation:
    a = policy.settings.audit
    return Rotation(max_bytes=a.max_bytes, max_files=a.max_files, max_age=a.max_age)


def _budget(policy: PolicySet) -> Budget:
    a = policy.settings.audit
    return Budget(lines=a.budget, interval=a.budget_interval, distinct=a.budget_distinct)


async def flush_audit_periodically(runtime: Callable[[], Runtime | None],
                                   period: float = 1.0) -> None:
    """Write folded-denial summaries soon after their interval ends, even when no new record
    arrives to trigger it. Runs until cancelled (the addon's `done`)."""
    while True:
        await asyncio.sleep(period)
        rt = runtime()
        if rt is not None:
            try:
                rt.flush_audit()
            except Exception:  # never let the timer die: the next tick tries again
                log.exception("egress: error writing audit summaries")


def _networks(policy: PolicySet, self_addresses: frozenset[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]) -> NetworkPolicy:
    nets = policy.settings.networks
    # Listening on 0.0.0.0/:: means every interface address is egress itself.
    wildcard = any(ip.is_unspecified for ip, _ in self_addresses)
    return NetworkPolicy(allow=nets.allow, deny=nets.deny, self_addresses=self_addresses,
                         local_addresses=local_interface_addresses() if wildcard else frozenset())
