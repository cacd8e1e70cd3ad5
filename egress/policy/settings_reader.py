"""The `settings:` block of a policy directory: default mode, DNS, networks, audit, secrets."""

from __future__ import annotations

from pathlib import Path

import yaml

from egress.policy.addresses import parse_network
from egress.policy.approval_rules import read_approval_settings
from egress.policy.hosts import parse_nameserver
from egress.policy.model import (
    ApprovalSettings,
    AuditSettings,
    ConnectionSettings,
    DnsSettings,
    IPNetwork,
    Mode,
    NetworkSettings,
    Settings,
    Source,
    WebSocketSettings,
)
from egress.policy.secret_settings import (
    SecretSettings,
    SettingsFieldError,
    parse_secret_settings,
)
from egress.policy.ship_settings import read_destinations
from egress.policy.units import parse_duration, parse_size
from egress.policy.yamlnodes import NodeReader, construct, find

__all__ = ["SettingsReader", "parse_mode"]

_AUDIT_KEYS = ("log_allowed", "max_bytes", "max_files", "max_age", "budget", "budget_interval",
               "budget_distinct", "ship", "spool_max_bytes", "ship_degraded_after")
_SETTINGS_KEYS = ("mode", "dns", "networks", "audit", "connections", "upstream_ca", "secrets",
                  "websocket", "approvals")
# settings.connections: key -> (lowest, highest) allowed, seconds (the cap: a count).
_CONNECTION_TIMEOUTS = {
    "request_head_timeout": (1.0, 3600.0),
    "idle_before_auth": (1.0, 3600.0),
    "idle_timeout": (1.0, 7 * 86400.0),
    "clienthello_timeout": (1.0, 600.0),
}
_CONNECTION_KEYS = (*_CONNECTION_TIMEOUTS, "max_unauthenticated_per_address")
_WS_MESSAGE_RANGE = (1024, 2**30)  # 1 KiB .. 1 GiB: a message is held whole in memory


class SettingsReader(NodeReader):
    """Reads the single `settings:` block (at most one file may hold it) into `settings`."""

    def __init__(self) -> None:
        super().__init__()
        self.settings: Settings | None = None

    def add_settings(self, file: str, key_node: yaml.Node, node: yaml.Node) -> None:
        if self.settings is not None and self.settings.source is not None:
            self.error(
                file, key_node, "settings",
                f"settings are already defined in {self.settings.source}; "
                f"keep them in one file",
            )
            return
        fields = self.mapping(file, node, "settings", _SETTINGS_KEYS)
        if fields is None:
            return
        mode = Mode.ENFORCE
        if "mode" in fields:
            mode = self.parsed(file, fields["mode"][1], "settings.mode", parse_mode) or mode
        dns = DnsSettings()
        if "dns" in fields:
            dns = self.dns_settings(file, fields["dns"][1])
        networks = NetworkSettings()
        if "networks" in fields:
            networks = self.network_settings(file, fields["networks"][1])
        audit = AuditSettings()
        if "audit" in fields:
            audit = self.audit_settings(file, fields["audit"][1])
        connections = ConnectionSettings()
        if "connections" in fields:
            connections = self.connection_settings(file, fields["connections"][1])
        upstream_ca = None
        if "upstream_ca" in fields:
            ca = self.scalar(file, fields["upstream_ca"][1], "settings.upstream_ca", str,
                             "a path to a PEM file")
            if ca is not None:
                path = Path(file).parent / ca
                if not path.is_file():
                    self.error(file, fields["upstream_ca"][1], "settings.upstream_ca",
                               f"{path} does not exist; give a PEM file, relative to {file}")
                upstream_ca = str(path.resolve())
        secrets = None
        if "secrets" in fields:
            secrets = self.secret_settings(file, fields["secrets"][1])
        websocket = WebSocketSettings()
        if "websocket" in fields:
            websocket = self.websocket_settings(file, fields["websocket"][1])
        approvals = ApprovalSettings()
        if "approvals" in fields:
            approvals = read_approval_settings(self, file, fields["approvals"][1])
        self.settings = Settings(
            mode=mode, dns=dns, networks=networks, audit=audit, connections=connections,
            websocket=websocket, upstream_ca=upstream_ca, secrets=secrets, approvals=approvals,
            source=Source(file, key_node.start_mark.line + 1),
        )

    def dns_settings(self, file: str, node: yaml.Node) -> DnsSettings:
        keys = ("nameservers", "timeout", "min_ttl", "max_ttl")
        fields = self.mapping(file, node, "settings.dns", keys) or {}
        out = DnsSettings()
        servers: list[str] = []
        if "nameservers" in fields:
            for i, item in self.items(file, fields["nameservers"][1], "settings.dns.nameservers"):
                s = self.parsed(file, item, f"settings.dns.nameservers[{i}]",
                                _nameserver)
                if s is not None:
                    servers.append(s)
        nums: dict[str, float] = {}
        for key, low, high in (("timeout", 0.1, 60), ("min_ttl", 0, 86400), ("max_ttl", 1, 86400)):
            if key in fields:
                v = self.scalar(file, fields[key][1], f"settings.dns.{key}", (int, float),  # type: ignore[arg-type]
                                "a number")
                if v is not None and not low <= v <= high:
                    self.error(file, fields[key][1], f"settings.dns.{key}",
                               f"must be between {low} and {high}")
                elif v is not None:
                    nums[key] = v
        out = DnsSettings(
            nameservers=tuple(servers),
            timeout=float(nums.get("timeout", out.timeout)),
            min_ttl=int(nums.get("min_ttl", out.min_ttl)),
            max_ttl=int(nums.get("max_ttl", out.max_ttl)),
        )
        if out.min_ttl > out.max_ttl:
            self.error(file, node, "settings.dns.min_ttl", "must not exceed max_ttl")
        return out

    def audit_settings(self, file: str, node: yaml.Node) -> AuditSettings:
        a = self.mapping(file, node, "settings.audit", _AUDIT_KEYS) or {}
        out = AuditSettings()
        if "log_allowed" in a:
            v = self.scalar(file, a["log_allowed"][1], "settings.audit.log_allowed", bool,
                            "true or false")
            out = AuditSettings(log_allowed=bool(v))
        size = self.parsed_unit(file, a, "max_bytes", parse_size, "a size such as 100MB",
                                "settings.audit")
        files = self.scalar(file, a["max_files"][1], "settings.audit.max_files", int,
                            "a whole number") if "max_files" in a else None
        if files is not None and not 1 <= files <= 1000:
            self.error(file, a["max_files"][1], "settings.audit.max_files",
                       "must be between 1 and 1000")
        age = self.parsed_unit(file, a, "max_age", parse_duration, "a duration such as 1d",
                               "settings.audit")
        if age is not None and age < 60:
            self.error(file, a["max_age"][1], "settings.audit.max_age", "must be at least 1m")
        counts: dict[str, int] = {}
        for key in ("budget", "budget_distinct"):
            if key in a:
                n = self.scalar(file, a[key][1], f"settings.audit.{key}", int, "a whole number")
                if n is not None and not 1 <= n <= 1_000_000:
                    self.error(file, a[key][1], f"settings.audit.{key}",
                               "must be between 1 and 1000000 (lines per skill per interval)")
                elif n is not None:
                    counts[key] = n
        interval = self.parsed_unit(file, a, "budget_interval", parse_duration,
                                    "a duration such as 1m", "settings.audit")
        if interval is not None and not 1 <= interval <= 86400:
            self.error(file, a["budget_interval"][1], "settings.audit.budget_interval",
                       "must be between 1s and 1d")
            interval = None
        ship = read_destinations(self, file, a["ship"][1]) if "ship" in a else out.ship
        spool = self.parsed_unit(file, a, "spool_max_bytes", parse_size, "a size such as 256MiB",
                                 "settings.audit")
        if spool is not None and not 2**20 <= spool <= 2**40:
            self.error(file, a["spool_max_bytes"][1], "settings.audit.spool_max_bytes",
                       "must be between 1MiB and 1TiB")
            spool = None
        lag = self.parsed_unit(file, a, "ship_degraded_after", parse_duration,
                               "a duration such as 5m", "settings.audit")
        if lag is not None and not 1 <= lag <= 7 * 86400:
            self.error(file, a["ship_degraded_after"][1], "settings.audit.ship_degraded_after",
                       "must be between 1s and 7d")
            lag = None
        return AuditSettings(
            log_allowed=out.log_allowed,
            max_bytes=int(size) if size is not None else out.max_bytes,
            max_files=files if files is not None else out.max_files,
            max_age=age if age is not None else out.max_age,
            budget=counts.get("budget", out.budget),
            budget_interval=interval if interval is not None else out.budget_interval,
            budget_distinct=counts.get("budget_distinct", out.budget_distinct),
            ship=ship,
            spool_max_bytes=int(spool) if spool is not None else out.spool_max_bytes,
            ship_degraded_after=lag if lag is not None else out.ship_degraded_after,
        )

    def connection_settings(self, file: str, node: yaml.Node) -> ConnectionSettings:
        fields = self.mapping(file, node, "settings.connections", _CONNECTION_KEYS) or {}
        values: dict[str, float] = {}
        for key, (low, high) in _CONNECTION_TIMEOUTS.items():
            seconds = self.parsed_unit(file, fields, key, parse_duration,
                                       "a duration such as 30s or 5m", "settings.connections")
            if seconds is not None and not low <= seconds <= high:
                self.error(file, fields[key][1], f"settings.connections.{key}",
                           f"must be between {low:g}s and {high:g}s")
            elif seconds is not None:
                values[key] = seconds
        cap = None
        if "max_unauthenticated_per_address" in fields:
            where = "settings.connections.max_unauthenticated_per_address"
            cap = self.scalar(file, fields["max_unauthenticated_per_address"][1], where, int,
                              "a whole number")
            if cap is not None and not 1 <= cap <= 1_000_000:
                self.error(file, fields["max_unauthenticated_per_address"][1], where,
                           "must be between 1 and 1000000")
                cap = None
        default = ConnectionSettings()
        return ConnectionSettings(
            request_head_timeout=values.get("request_head_timeout", default.request_head_timeout),
            idle_before_auth=values.get("idle_before_auth", default.idle_before_auth),
            idle_timeout=values.get("idle_timeout", default.idle_timeout),
            clienthello_timeout=values.get("clienthello_timeout", default.clienthello_timeout),
            max_unauthenticated_per_address=(
                cap if cap is not None else default.max_unauthenticated_per_address),
        )

    def websocket_settings(self, file: str, node: yaml.Node) -> WebSocketSettings:
        fields = self.mapping(file, node, "settings.websocket", ("max_message",)) or {}
        size = self.parsed_unit(file, fields, "max_message", parse_size, "a size such as 4MiB",
                                "settings.websocket")
        low, high = _WS_MESSAGE_RANGE
        if size is not None and not low <= size <= high:
            self.error(file, fields["max_message"][1], "settings.websocket.max_message",
                       "must be between 1KiB and 1GiB")
            size = None
        return WebSocketSettings(max_message=int(size)) if size is not None else WebSocketSettings()

    def network_settings(self, file: str, node: yaml.Node) -> NetworkSettings:
        fields = self.mapping(file, node, "settings.networks", ("allow", "deny")) or {}
        lists: dict[str, list[IPNetwork]] = {"allow": [], "deny": []}
        for key in lists:
            if key in fields:
                for i, item in self.items(file, fields[key][1], f"settings.networks.{key}"):
                    net = self.parsed(file, item, f"settings.networks.{key}[{i}]",
                                      parse_network)
                    if net is not None:
                        lists[key].append(net)
        return NetworkSettings(allow=tuple(lists["allow"]), deny=tuple(lists["deny"]))

    def secret_settings(self, file: str, node: yaml.Node) -> SecretSettings | None:
        try:
            raw = construct(node)
        except (yaml.YAMLError, ValueError, TypeError):
            self.error(file, node, "settings.secrets",
                       "holds a value YAML cannot read; remove any !tag")
            return None
        try:
            return parse_secret_settings(raw)
        except SettingsFieldError as exc:
            where = f"settings.secrets.{exc.field}" if exc.field else "settings.secrets"
            self.error(file, find(node, exc.field), where, exc.message)
            return None


def parse_mode(text: str) -> Mode:
    try:
        return Mode(text)
    except ValueError:
        raise ValueError(f"unknown mode {text!r}; use enforce or report") from None


def _nameserver(text: str) -> str:
    """A nameserver as written, checked by the parser the resolver uses (egress/policy/hosts.py)."""
    parse_nameserver(text)
    return text
