"""Read a directory of policy YAML files into a validated PolicySet.

The YAML is walked as a node tree (not plain dicts) so every problem can be reported as
`file:line: field: message`, and so duplicate keys, which PyYAML would silently drop, are
caught. All problems in all files are collected before failing: an operator fixes them in one
pass. The file format is described in README.md ("Policy format").
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import yaml

from egress.errors import PolicyError, PolicyErrors
from egress.policy.approval_rules import read_rule_approval
from egress.policy.match import parse_host_pattern, parse_path_pattern
from egress.policy.model import (
    SKILL_NAME,
    Credential,
    Limits,
    Mode,
    PolicySet,
    RefUse,
    Rule,
    Settings,
    SkillPolicy,
    Source,
)
from egress.policy.secret_refs import REMOTE_SCHEMES, SETTINGS_KEY, parse_secret_ref
from egress.policy.secret_settings import SettingsFieldError
from egress.policy.settings_reader import SettingsReader, parse_mode
from egress.policy.shapes import (
    SHAPE_KEYS,
    OAuth2,
    parse_aws_sigv4,
    parse_basic,
    parse_oauth2,
    parse_query_param,
)
from egress.policy.yamlnodes import COMPOSER, construct, find

__all__ = ["load_policy_dir", "load_policy_texts"]

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_METHOD = re.compile(r"^[A-Z]+$")
_TOP_KEYS = ("settings", "skills")
_SKILL_KEYS = ("mode", "description", "allow", "credentials", "limits")
_RULE_KEYS = ("host", "ports", "methods", "paths", "credential", "limits", "raw_tcp",
              "approval")
_LIMIT_KEYS = ("requests_per_minute", "concurrent_connections")
_CREDENTIAL_KEYS = ("secret", "header", "format", "placeholder", *SHAPE_KEYS)
_SHAPE_PARSERS = {"query": parse_query_param, "basic": parse_basic,
                  "aws_sigv4": parse_aws_sigv4, "oauth2": parse_oauth2}
_SHAPE_REFS = {"aws_sigv4": ("access_key_id", "session_token"),
               "oauth2": ("client_id", "client_secret", "refresh_token")}


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


class _Builder(SettingsReader):
    """Collects skills (settings: see SettingsReader) and every problem found on the way."""

    def __init__(self) -> None:
        super().__init__()
        self.skills: dict[str, SkillPolicy] = {}
        self.skill_modes: dict[str, bool] = {}  # skill -> mode was written explicitly
        self.placeholders: dict[str, Source] = {}


    # -- files ---------------------------------------------------------------------------
    def add_file(self, file: str, text: str) -> None:
        try:
            root = yaml.compose(text, Loader=COMPOSER)
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


    # -- skills --------------------------------------------------------------------------
    def add_skill(self, file: str, name: str, key_node: yaml.Node, node: yaml.Node) -> None:
        field = f"skills.{name}"
        if not SKILL_NAME.match(name):
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
            mode = self.parsed(file, fields["mode"][1], f"{field}.mode", parse_mode)
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
        raw_tcp = self.raw_tcp(file, field, fields)
        approval = None
        if "approval" in fields:
            approval = read_rule_approval(self, file, field, fields["approval"][1])
        if pattern is None or len(self.errors) != before:
            return None
        return Rule(
            limits=limits, approval=approval,
            host=pattern.host, wildcard=pattern.wildcard, ports=frozenset(ports),
            methods=frozenset(methods) if methods is not None else None,
            paths=tuple(paths) if paths is not None else None,
            credential=credential, source=Source(file, node.start_mark.line + 1),
            raw_tcp=raw_tcp,
        )

    def raw_tcp(self, file: str, field: str, fields: dict[str, tuple[yaml.Node, yaml.Node]]) -> bool:
        """`raw_tcp: true`: bytes that are neither TLS nor HTTP/1 may cross the tunnel. Such a
        relay cannot be looked into, so it cannot go with methods, paths or a credential."""
        if "raw_tcp" not in fields:
            return False
        node = fields["raw_tcp"][1]
        value = self.scalar(file, node, f"{field}.raw_tcp", bool, "true or false")
        if not value:
            return False
        looks_inside = [k for k in ("methods", "paths", "credential", "approval") if k in fields]
        if looks_inside:
            self.error(file, node, f"{field}.raw_tcp",
                       f"cannot be combined with {', '.join(looks_inside)}: egress cannot look "
                       f"inside a raw TCP relay; drop raw_tcp, or drop "
                       f"{', '.join(looks_inside)} from this rule")
        return True

    def credential(
        self, file: str, field: str, name: str, key_node: yaml.Node, node: yaml.Node
    ) -> Credential | None:
        fields = self.mapping(file, node, field, _CREDENTIAL_KEYS)
        if fields is None:
            return None
        before = len(self.errors)
        shapes = [k for k in SHAPE_KEYS if k in fields]
        if len(shapes) > 1:
            self.error(file, fields[shapes[1]][0], f"{field}.{shapes[1]}",
                       f"a credential has one shape; choose one of {', '.join(shapes)}")
            return None
        shape = shapes[0] if shapes else "header"
        for key in ("header", "format"):
            if key in fields and shape != "header":
                self.error(file, fields[key][0], f"{field}.{key}",
                           f"belongs to the header shape, not to {shape}; remove it")
        parsed = self.shape(file, field, shape, fields[shape]) if shape != "header" else None
        refs: list[RefUse] = []
        secret = None
        if shape == "oauth2":
            if "secret" in fields:
                self.error(file, fields["secret"][0], f"{field}.secret",
                           "oauth2 credentials name oauth2.client_secret instead; remove secret")
        elif "secret" not in fields:
            self.error(file, node, f"{field}.secret",
                       "missing; write vault:MOUNT/PATH#FIELD, op://VAULT/ITEM/FIELD, "
                       "doppler:PROJECT/CONFIG#NAME, env:NAME or file:/ABSOLUTE/PATH")
            return None
        else:
            secret = self.parsed(file, fields["secret"][1], f"{field}.secret", parse_secret_ref)
            if secret is not None:
                refs.append(RefUse("secret", secret, _line(file, fields["secret"][1])))
        if parsed is not None:
            value_node = fields[shape][1]
            for key in _SHAPE_REFS.get(shape, ()):
                ref = getattr(parsed, key)
                if ref is not None:
                    refs.append(RefUse(f"{shape}.{key}", ref, _line(file, find(value_node, key))))
            if isinstance(parsed, OAuth2):
                secret = parsed.client_secret
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
        return Credential(
            name=name, secret=secret, header=header, format=fmt, placeholder=placeholder,
            source=Source(file, key_node.start_mark.line + 1),
            query=parsed if shape == "query" else None,  # type: ignore[arg-type]
            basic=parsed if shape == "basic" else None,  # type: ignore[arg-type]
            aws=parsed if shape == "aws_sigv4" else None,  # type: ignore[arg-type]
            oauth2=parsed if shape == "oauth2" else None,  # type: ignore[arg-type]
            refs=tuple(refs))

    def shape(self, file: str, field: str, shape: str,
              nodes: tuple[yaml.Node, yaml.Node]) -> object | None:
        """The parsed `query:`, `basic:`, `aws_sigv4:` or `oauth2:` value of a credential."""
        node = nodes[1]
        try:
            raw = construct(node)
        except (yaml.YAMLError, ValueError, TypeError):
            self.error(file, node, f"{field}.{shape}", "holds a value YAML cannot read; "
                                                       "remove any !tag")
            return None
        try:
            return _SHAPE_PARSERS[shape](raw)
        except SettingsFieldError as exc:
            where = f"{field}.{shape}.{exc.field}" if exc.field else f"{field}.{shape}"
            self.error(file, find(node, exc.field) if exc.field else node, where, exc.message)
            return None

    def unconfigured_backends(self) -> None:
        """A reference to vault:, op:// or doppler: needs that backend's settings: without
        them it could never be read (and would fail only when a request needs it)."""
        secrets = self.settings.secrets if self.settings is not None else None
        for skill in self.skills.values():
            for cred in skill.credentials.values():
                for use in cred.all_refs():
                    scheme = use.ref.scheme
                    if scheme not in REMOTE_SCHEMES:
                        continue
                    key = SETTINGS_KEY[scheme]
                    if secrets is None or not secrets.configured(key):
                        where = f"{self.settings.source.file}" if (
                            self.settings is not None and self.settings.source) else \
                            "the settings file"
                        self.errors.append(PolicyError(
                            use.source.file, use.source.line,
                            f"skills.{skill.name}.credentials.{cred.name}.{use.field}",
                            f"{scheme}: references need settings.secrets.{key}, which is not "
                            f"configured; add it to the settings ({where})"))

    # -- result --------------------------------------------------------------------------
    def finish(self, files: list[tuple[str, str]]) -> PolicySet:
        self.unconfigured_backends()
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


def _line(file: str, node: yaml.Node) -> Source:
    return Source(file, node.start_mark.line + 1)


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


