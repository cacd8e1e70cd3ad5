"""Read a directory of policy YAML files into a validated PolicySet.

The YAML is walked as a node tree (not plain dicts) so every problem can be reported as
`file:line: field: message`, and so duplicate keys, which PyYAML would silently drop, are
caught. All problems in all files are collected before failing: an operator fixes them in one
pass. The file format is described in README.md ("Policy format").
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from egress.errors import PolicyError, PolicyErrors
from egress.policy.match import parse_host_pattern, parse_path_pattern
from egress.policy.model import (
    AuditSettings,
    Credential,
    DnsSettings,
    IPNetwork,
    Limits,
    Mode,
    NetworkSettings,
    PolicySet,
    Rule,
    Settings,
    SkillPolicy,
    Source,
)
from egress.units import parse_duration, parse_size

__all__ = ["load_policy_dir", "load_policy_texts"]

T = TypeVar("T")

_SKILL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_METHOD = re.compile(r"^[A-Z]+$")
_TOP_KEYS = ("settings", "skills")
_SKILL_KEYS = ("mode", "description", "allow", "credentials", "limits")
_RULE_KEYS = ("host", "ports", "methods", "paths", "credential", "limits")
_LIMIT_KEYS = ("requests_per_minute", "concurrent_connections")
_AUDIT_KEYS = ("log_allowed", "max_bytes", "max_files", "max_age")
_CREDENTIAL_KEYS = ("secret", "header", "format", "placeholder")
_SETTINGS_KEYS = ("mode", "dns", "networks", "audit", "upstream_ca", "secrets")


def load_policy_dir(directory: str | os.PathLike[str]) -> PolicySet:
    """Load every `*.yaml`/`*.yml` file in `directory` (not recursive). Raises PolicyErrors."""
    root = Path(directory)
    if not root.is_dir():
        raise PolicyErrors(
            [PolicyError(str(root), 0, "policies", "not a directory; pass the policy directory")]
        )
    paths = sorted(p for p in root.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    texts: list[tuple[str, str]] = []
    errors: list[PolicyError] = []
    for path in paths:
        try:
            texts.append((str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(PolicyError(str(path), 0, "file", f"cannot read: {exc}"))
    if not paths:
        errors.append(
            PolicyError(str(root), 0, "policies", "no *.yaml files; write at least one policy")
        )
    if errors:
        raise PolicyErrors(errors)
    return load_policy_texts(texts)


def load_policy_texts(files: list[tuple[str, str]]) -> PolicySet:
    """Build a PolicySet from (file name, YAML text) pairs. Raises PolicyErrors."""
    builder = _Builder()
    for name, text in files:
        builder.add_file(name, text)
    return builder.finish(files)


class _Builder:
    def __init__(self) -> None:
        self.errors: list[PolicyError] = []
        self.skills: dict[str, SkillPolicy] = {}
        self.skill_modes: dict[str, bool] = {}  # skill -> mode was written explicitly
        self.settings: Settings | None = None
        self.placeholders: dict[str, Source] = {}

    # -- helpers -------------------------------------------------------------------------
    def error(self, file: str, node: yaml.Node | None, field: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 0
        self.errors.append(PolicyError(file, line, field, message))

    def mapping(
        self, file: str, node: yaml.Node, field: str, allowed: tuple[str, ...] | None
    ) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        if not isinstance(node, yaml.MappingNode):
            self.error(file, node, field, "must be a mapping (key: value)")
            return None
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            where = f"{field}.{key}" if field else str(key)
            if not isinstance(key, str):
                self.error(file, key_node, field, "keys must be plain strings")
            elif key in out:
                first = out[key][0].start_mark.line + 1
                self.error(file, key_node, where, f"defined twice (first on line {first})")
            elif allowed is not None and key not in allowed:
                self.error(
                    file, key_node, where, f"unknown key; expected one of: {', '.join(allowed)}"
                )
            else:
                out[key] = (key_node, value_node)
        return out

    def scalar(
        self, file: str, node: yaml.Node, field: str, kind: type[T], what: str
    ) -> T | None:
        if isinstance(node, yaml.ScalarNode):
            try:
                value = _construct(node)
            except (yaml.YAMLError, ValueError, TypeError):
                value = None  # e.g. `!!int abc` or an unknown `!tag`: reported below
            # bool is an int in Python, but `port: true` is a mistake, not port 1.
            if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
                return value
        self.error(file, node, field, f"must be {what}")
        return None

    def items(self, file: str, node: yaml.Node, field: str) -> Iterator[tuple[int, yaml.Node]]:
        if not isinstance(node, yaml.SequenceNode):
            self.error(file, node, field, "must be a list")
            return
        yield from enumerate(node.value)

    def parsed(
        self, file: str, node: yaml.Node, field: str, parse: Callable[[str], T]
    ) -> T | None:
        text = self.scalar(file, node, field, str, "a string")
        if text is None:
            return None
        try:
            return parse(text)
        except ValueError as exc:
            self.error(file, node, field, str(exc))
            return None

    # -- files ---------------------------------------------------------------------------
    def add_file(self, file: str, text: str) -> None:
        try:
            root = yaml.compose(text, Loader=_COMPOSER)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 0
            problem = getattr(exc, "problem", None) or str(exc)
            lines = text.splitlines()
            if mark is not None and mark.line < len(lines) and "\t" in lines[mark.line]:
                problem += " (a tab: YAML indents with spaces only)"
            self.errors.append(PolicyError(file, line, "yaml", f"not valid YAML: {problem}"))
            return
        if root is None:
            return  # an empty file is allowed (e.g. everything commented out)
        if not isinstance(root, yaml.MappingNode):
            self.error(file, root, "file", "must be a mapping with `skills:` and/or `settings:`")
            return
        top = self.mapping(file, root, "", _TOP_KEYS)
        if top is None:
            return
        if "settings" in top:
            self.add_settings(file, *top["settings"])
        if "skills" in top:
            skills = self.mapping(file, top["skills"][1], "skills", None)
            for name, (key_node, value_node) in (skills or {}).items():
                self.add_skill(file, name, key_node, value_node)

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
            mode = self.parsed(file, fields["mode"][1], "settings.mode", _parse_mode) or mode
        dns = DnsSettings()
        if "dns" in fields:
            dns = self.dns_settings(file, fields["dns"][1])
        networks = NetworkSettings()
        if "networks" in fields:
            networks = self.network_settings(file, fields["networks"][1])
        audit = AuditSettings()
        if "audit" in fields:
            audit = self.audit_settings(file, fields["audit"][1])
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
        self.settings = Settings(
            mode=mode, dns=dns, networks=networks, audit=audit, upstream_ca=upstream_ca,
            secrets=secrets, source=Source(file, key_node.start_mark.line + 1),
        )

    def dns_settings(self, file: str, node: yaml.Node) -> DnsSettings:
        keys = ("nameservers", "timeout", "min_ttl", "max_ttl")
        fields = self.mapping(file, node, "settings.dns", keys) or {}
        out = DnsSettings()
        servers: list[str] = []
        if "nameservers" in fields:
            for i, item in self.items(file, fields["nameservers"][1], "settings.dns.nameservers"):
                s = self.parsed(file, item, f"settings.dns.nameservers[{i}]", _parse_nameserver)
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
        size = self.parsed_unit(file, a, "max_bytes", parse_size, "a size such as 100MB")
        files = self.scalar(file, a["max_files"][1], "settings.audit.max_files", int,
                            "a whole number") if "max_files" in a else None
        if files is not None and not 1 <= files <= 1000:
            self.error(file, a["max_files"][1], "settings.audit.max_files",
                       "must be between 1 and 1000")
        age = self.parsed_unit(file, a, "max_age", parse_duration, "a duration such as 1d")
        if age is not None and age < 60:
            self.error(file, a["max_age"][1], "settings.audit.max_age", "must be at least 1m")
        return AuditSettings(
            log_allowed=out.log_allowed,
            max_bytes=int(size) if size is not None else out.max_bytes,
            max_files=files if files is not None else out.max_files,
            max_age=age if age is not None else out.max_age,
        )

    def parsed_unit(self, file: str, fields: dict[str, tuple[yaml.Node, yaml.Node]], key: str,
                    parse: Callable[[Any], float], what: str) -> float | None:
        """A size or duration written as a number or a string with a unit ("100MB", "7d")."""
        if key not in fields:
            return None
        node = fields[key][1]
        try:
            raw = _construct(node) if isinstance(node, yaml.ScalarNode) else None
            if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
                raise ValueError(f"must be {what}")
            return parse(raw)
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            self.error(file, node, f"settings.audit.{key}", str(exc))
            return None

    def limits(self, file: str, field: str, node: yaml.Node) -> Limits | None:
        """`limits: {requests_per_minute: N, concurrent_connections: N}` of a skill or rule."""
        fields = self.mapping(file, node, field, _LIMIT_KEYS)
        if fields is None:
            return None
        if not node.value:  # (an unknown key alone is reported as such, not as empty)
            self.error(file, node, field, f"empty; set {' and/or '.join(_LIMIT_KEYS)}")
            return None
        values: dict[str, int] = {}
        for key in _LIMIT_KEYS:
            if key in fields:
                v = self.scalar(file, fields[key][1], f"{field}.{key}", int, "a whole number")
                if v is not None and not 1 <= v <= 1_000_000:
                    self.error(file, fields[key][1], f"{field}.{key}",
                               "must be between 1 and 1000000; leave it out for no limit")
                elif v is not None:
                    values[key] = v
        return Limits(**values) if values else None

    def network_settings(self, file: str, node: yaml.Node) -> NetworkSettings:
        fields = self.mapping(file, node, "settings.networks", ("allow", "deny")) or {}
        lists: dict[str, list[IPNetwork]] = {"allow": [], "deny": []}
        for key in lists:
            if key in fields:
                for i, item in self.items(file, fields[key][1], f"settings.networks.{key}"):
                    net = self.parsed(file, item, f"settings.networks.{key}[{i}]", _parse_network)
                    if net is not None:
                        lists[key].append(net)
        return NetworkSettings(allow=tuple(lists["allow"]), deny=tuple(lists["deny"]))

    def secret_settings(self, file: str, node: yaml.Node) -> Any:
        from egress.secrets.config import SettingsFieldError, parse_secret_settings

        try:
            raw = _construct(node)
        except (yaml.YAMLError, ValueError, TypeError):
            self.error(file, node, "settings.secrets",
                       "holds a value YAML cannot read; remove any !tag")
            return None
        try:
            return parse_secret_settings(raw)
        except SettingsFieldError as exc:
            where = f"settings.secrets.{exc.field}" if exc.field else "settings.secrets"
            self.error(file, _find(node, exc.field), where, exc.message)
            return None

    # -- skills --------------------------------------------------------------------------
    def add_skill(self, file: str, name: str, key_node: yaml.Node, node: yaml.Node) -> None:
        field = f"skills.{name}"
        if not _SKILL_NAME.match(name):
            self.error(file, key_node, field,
                       "skill names use letters, digits, '.', '_' and '-' (at most 64), "
                       "and start with a letter or digit")
            return
        if name in self.skills:
            self.error(file, key_node, field, f"skill defined twice (first at {self.skills[name].source})")
            return
        fields = self.mapping(file, node, field, _SKILL_KEYS)
        if fields is None:
            return
        mode: Mode | None = None
        if "mode" in fields:
            mode = self.parsed(file, fields["mode"][1], f"{field}.mode", _parse_mode)
        if "description" in fields:
            self.scalar(file, fields["description"][1], f"{field}.description", str, "a string")
        credentials: dict[str, Credential] = {}
        if "credentials" in fields:
            creds = self.mapping(file, fields["credentials"][1], f"{field}.credentials", None)
            for cname, (ckey, cnode) in (creds or {}).items():
                cred = self.credential(file, f"{field}.credentials.{cname}", cname, ckey, cnode)
                if cred is not None:
                    credentials[cname] = cred
        rules: list[Rule] = []
        if "allow" in fields:
            for i, item in self.items(file, fields["allow"][1], f"{field}.allow"):
                rule = self.rule(file, f"{field}.allow[{i}]", item, credentials)
                if rule is not None:
                    rules.append(rule)
        limits = None
        if "limits" in fields:
            limits = self.limits(file, f"{field}.limits", fields["limits"][1])
        self.skill_modes[name] = mode is not None
        self.skills[name] = SkillPolicy(
            name=name, mode=mode or Mode.ENFORCE, rules=tuple(rules),
            credentials=credentials, source=Source(file, key_node.start_mark.line + 1),
            limits=limits,
        )

    def rule(
        self, file: str, field: str, node: yaml.Node, credentials: dict[str, Credential]
    ) -> Rule | None:
        fields = self.mapping(file, node, field, _RULE_KEYS)
        if fields is None:
            return None
        if "host" not in fields:
            self.error(file, node, f"{field}.host", "missing; every allow entry names a host")
            return None
        before = len(self.errors)
        pattern = self.parsed(file, fields["host"][1], f"{field}.host", parse_host_pattern)
        ports: set[int] = {443}
        if "ports" in fields:
            ports = set()
            for i, item in self.items(file, fields["ports"][1], f"{field}.ports"):
                port = self.scalar(file, item, f"{field}.ports[{i}]", int, "a port number")
                if port is not None and not 1 <= port <= 65535:
                    self.error(file, item, f"{field}.ports[{i}]", f"{port} is outside 1-65535")
                elif port is not None:
                    ports.add(port)
            if not ports and len(self.errors) == before:
                self.error(file, fields["ports"][1], f"{field}.ports",
                           "empty list; leave `ports` out for the default [443]")
        methods: set[str] | None = None
        if "methods" in fields:
            methods = set()
            for i, item in self.items(file, fields["methods"][1], f"{field}.methods"):
                m = self.parsed(file, item, f"{field}.methods[{i}]", _parse_method)
                if m is not None:
                    methods.add(m)
        paths: list[str] | None = None
        if "paths" in fields:
            paths = []
            for i, item in self.items(file, fields["paths"][1], f"{field}.paths"):
                p = self.parsed(file, item, f"{field}.paths[{i}]", parse_path_pattern)
                if p is not None:
                    paths.append(p)
        credential = None
        if "credential" in fields:
            credential = self.scalar(file, fields["credential"][1], f"{field}.credential", str,
                                     "the name of a credential")
            if credential is not None and credential not in credentials:
                known = ", ".join(sorted(credentials)) or "none defined"
                self.error(file, fields["credential"][1], f"{field}.credential",
                           f"{credential!r} is not defined under this skill's `credentials` "
                           f"({known})")
        limits = None
        if "limits" in fields:
            limits = self.limits(file, f"{field}.limits", fields["limits"][1])
        if pattern is None or len(self.errors) != before:
            return None
        return Rule(
            limits=limits,
            host=pattern.host, wildcard=pattern.wildcard, ports=frozenset(ports),
            methods=frozenset(methods) if methods is not None else None,
            paths=tuple(paths) if paths is not None else None,
            credential=credential, source=Source(file, node.start_mark.line + 1),
        )

    def credential(
        self, file: str, field: str, name: str, key_node: yaml.Node, node: yaml.Node
    ) -> Credential | None:
        from egress.secrets.base import parse_secret_ref

        fields = self.mapping(file, node, field, _CREDENTIAL_KEYS)
        if fields is None:
            return None
        before = len(self.errors)
        if "secret" not in fields:
            self.error(file, node, f"{field}.secret",
                       "missing; write vault:MOUNT/PATH#FIELD, env:NAME or file:/ABSOLUTE/PATH")
            return None
        secret = self.parsed(file, fields["secret"][1], f"{field}.secret",
                             lambda s: (parse_secret_ref(s), s)[1])
        header = "Authorization"
        if "header" in fields:
            header = self.parsed(file, fields["header"][1], f"{field}.header", _parse_header) or header
        fmt = "Bearer {secret}" if header.lower() == "authorization" else "{secret}"
        if "format" in fields:
            fmt = self.parsed(file, fields["format"][1], f"{field}.format", _parse_format) or fmt
        placeholder = None
        if "placeholder" in fields:
            placeholder = self.parsed(file, fields["placeholder"][1], f"{field}.placeholder",
                                      _parse_placeholder)
            if placeholder is not None:
                other = self.placeholders.get(placeholder)
                if other is not None:
                    self.error(file, fields["placeholder"][1], f"{field}.placeholder",
                               f"already used at {other}; each credential needs its own")
                self.placeholders[placeholder] = Source(file, fields["placeholder"][1].start_mark.line + 1)
        if secret is None or len(self.errors) != before:
            return None
        return Credential(name=name, secret=secret, header=header, format=fmt,
                          placeholder=placeholder, source=Source(file, key_node.start_mark.line + 1))

    # -- result --------------------------------------------------------------------------
    def finish(self, files: list[tuple[str, str]]) -> PolicySet:
        if self.errors:
            raise PolicyErrors(self.errors)
        settings = self.settings or Settings()
        skills = self.skills
        if settings.mode is Mode.REPORT:
            # The global default applies only where a skill did not choose for itself.
            skills = {
                n: s if self.skill_modes[n] else SkillPolicy(
                    name=s.name, mode=Mode.REPORT, rules=s.rules,
                    credentials=s.credentials, source=s.source, limits=s.limits)
                for n, s in skills.items()
            }
        digest = hashlib.sha256()
        for name, text in sorted(files):
            digest.update(Path(name).name.encode() + b"\0" + text.encode() + b"\0")
        return PolicySet(skills=skills, settings=settings, digest=digest.hexdigest()[:16],
                         files=tuple(name for name, _ in files))


_STR_TAG = "tag:yaml.org,2002:str"
# libyaml's parser when PyYAML was built with it (3x faster on large policies), same nodes and
# line numbers; some YAML syntax error texts differ.
_COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


def _construct(node: yaml.Node) -> Any:
    # Most scalars are plain strings: skip the constructor machinery for them (this is most of
    # the load time of a 100,000-rule policy).
    if isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG:
        return node.value
    try:
        return _CONSTRUCTOR.construct_object(node, deep=True)
    finally:
        _CONSTRUCTOR.constructed_objects.clear()  # no memory kept between calls


def _find(node: yaml.Node, dotted: str) -> yaml.Node:
    """The node at a dotted path below `node` (best effort), for error line numbers."""
    for part in dotted.split("."):
        if not isinstance(node, yaml.MappingNode):
            break
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == part:
                node = v
                break
        else:
            break
    return node


def _parse_mode(text: str) -> Mode:
    try:
        return Mode(text)
    except ValueError:
        raise ValueError(f"unknown mode {text!r}; use enforce or report") from None


def _parse_method(text: str) -> str:
    if not _METHOD.match(text):
        raise ValueError(f"{text!r} is not an HTTP method; write it in capitals, e.g. GET")
    if text == "CONNECT":
        raise ValueError("CONNECT is how tunnels are opened, not a request method to allow")
    return text


def _parse_header(text: str) -> str:
    if not _HEADER_NAME.match(text):
        raise ValueError(f"{text!r} is not a valid HTTP header name")
    if text.lower() in ("host", "proxy-authorization", "content-length", "transfer-encoding"):
        raise ValueError(f"{text} cannot carry a credential")
    return text


def _parse_format(text: str) -> str:
    if text.count("{secret}") != 1:
        raise ValueError("must contain {secret} exactly once, e.g. 'Bearer {secret}'")
    return text


def _parse_placeholder(text: str) -> str:
    if len(text) < 12:
        raise ValueError("too short to be unmistakable; use 12 or more characters")
    if any(c.isspace() for c in text) or not text.isprintable():
        raise ValueError("must not contain spaces or control characters")
    return text


def _parse_network(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a network in CIDR form, e.g. 10.20.0.0/16 ({exc})") from None


def _parse_nameserver(text: str) -> str:
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else "53" if not rest else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: a nameserver is an IP address, optionally with :port") from None
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: port must be 1-65535")
    return text
