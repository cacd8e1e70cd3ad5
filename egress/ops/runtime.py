"""The running state egress decides with: policy, tokens, audit writer, address guard.

One place builds it (`Runtime.create`), shared by the mitmproxy addon (`mitmdump -s`) and
`egress serve`, so both paths enforce the same thing. Reloading swaps the policy (and what is
derived from it) only after the new one validated: a bad file never replaces a good policy.

The audit writer signs checkpoints with DATA_DIR/audit-key.pem; with `settings.audit.ship`
it also appends to DATA_DIR/spool, and a Shipper thread sends from there (`start_shipping`,
at the proxy's `running`; `close` at shutdown).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from egress.audit.chain import Signer
from egress.audit.fold import Budget, DenialFolder
from egress.audit.records import AuditRecord
from egress.audit.ship.shipper import Shipper
from egress.audit.spool import Spool
from egress.audit.writer import AUDIT_FILE, AuditWriter, Rotation
from egress.errors import PolicyErrors
from egress.identity import TokenStore
from egress.netguard import AddressGuard, DnsResolver, local_interface_addresses
from egress.policy.addresses import NetworkPolicy
from egress.policy.load import load_policy_dir
from egress.policy.model import AuditSettings, PolicySet
from egress.policy.secret_settings import SecretSettings
from egress.secrets import SecretCache, build_secret_cache

__all__ = ["ReloadStatus", "Runtime", "flush_audit_periodically"]

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
        writer = AuditWriter(audit_path or data / AUDIT_FILE, _rotation(policy),
                             signer=_signer(data))
        runtime = cls(
            policy_dir=Path(policy_dir), data_dir=data, policy=policy,
            tokens=TokenStore(data), audit=writer,
            guard=guard, self_addresses=self_addresses,
            secrets=build_secret_cache(policy.settings.secrets or SecretSettings()),
            folder=DenialFolder(_budget(policy)),
        )
        runtime._configure_shipping(policy)
        return runtime

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
        """Swap in a validated policy and what derives from it (guard networks, secret cache)."""
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


def _close_later(cache: SecretCache) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    loop.create_task(cache.close())


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
