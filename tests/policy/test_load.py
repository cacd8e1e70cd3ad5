"""The policy loader: every validation, reported as the exact `file:line: field: message` line."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from egress.errors import PolicyErrors
from egress.policy.load import load_policy_dir, load_policy_texts
from egress.policy.model import Credential, Mode, Rule, Source
from egress.policy.secret_refs import SecretRef

FIXTURES = Path(__file__).parent / "fixtures"


def write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (directory / name).write_text(dedent(text), encoding="utf-8")
    return directory


def error_lines(directory: Path, files: dict[str, str]) -> list[str]:
    """Load `files` from `directory`; return the error lines with the directory cut off."""
    write(directory, files)
    with pytest.raises(PolicyErrors) as info:
        load_policy_dir(directory)
    lines = [str(e).replace(f"{directory}/", "") for e in info.value.errors]
    assert str(info.value) == "\n".join(str(e) for e in info.value.errors)
    return lines


# One skill wrapped around an allow entry, so the rule cases below stay short. The entry
# starts on line 4; its second key is on line 5.
def rule_yaml(entry: str) -> str:
    body = dedent(entry).strip("\n").replace("\n", "\n        ")
    return f"skills:\n  s:\n    allow:\n      - {body}\n"


_UNKNOWN_RULE_KEY = ("unknown key; expected one of: host, ports, methods, paths, credential, limits, "
                     "raw_tcp, approval")
_STAR_LABEL = "'*' is only allowed as the whole first label, as in *.example.com"
_NOT_HOST = ("is not a host name; write only the host (ports go in `ports:`, "
             "paths in `paths:`)")

# -- one file, one problem --------------------------------------------------------------------
SINGLE_FILE_CASES = [
    # YAML itself
    pytest.param("skills:\n  s: {\n", "p.yaml:3: yaml: not valid YAML: did not find expected node content", id="unclosed flow mapping names the line"),
    pytest.param("skills:\n\ts: {}\n", "p.yaml:2: yaml: not valid YAML: found character that cannot start any "
                 "token (a tab: YAML indents with spaces only)", id="tab indentation names the line"),
    pytest.param("skills: {}\n---\nskills: {}\n", "p.yaml:2: yaml: not valid YAML: but found "
                 "another document", id="two YAML documents in one file"),
    pytest.param("- skills\n", "p.yaml:1: file: must be a mapping with `skills:` and/or "
                 "`settings:`", id="a list at the top level"),
    pytest.param("skills\n", "p.yaml:1: file: must be a mapping with `skills:` and/or "
                 "`settings:`", id="a bare word at the top level"),
    # unknown keys, at every level
    pytest.param("skill:\n  s: {}\n", "p.yaml:1: skill: unknown key; expected one of: "
                 "settings, skills", id="unknown top-level key"),
    pytest.param("skills:\n  s:\n    allows: []\n", "p.yaml:3: skills.s.allows: unknown key; "
                 "expected one of: mode, description, allow, credentials, limits", id="unknown skill key"),
    pytest.param(rule_yaml("host: a.example.com\nport: 443"),
                 f"p.yaml:5: skills.s.allow[0].port: {_UNKNOWN_RULE_KEY}", id="unknown rule key"),
    pytest.param("skills:\n  s:\n    credentials:\n      c:\n        secret: env:X\n"
                 "        value: abc\n", "p.yaml:6: skills.s.credentials.c.value: unknown key; "
                 "expected one of: secret, header, format, placeholder, query, basic, aws_sigv4, "
                 "oauth2",
                 id="unknown credential key"),
    pytest.param("settings:\n  modes: report\n", "p.yaml:2: settings.modes: unknown key; "
                 "expected one of: mode, dns, networks, audit, connections, upstream_ca, secrets, websocket, "
                 "approvals",
                 id="unknown settings key"),
    pytest.param("settings:\n  dns:\n    servers: []\n", "p.yaml:3: settings.dns.servers: "
                 "unknown key; expected one of: nameservers, timeout, min_ttl, max_ttl",
                 id="unknown dns key"),
    pytest.param("settings:\n  networks:\n    permit: []\n", "p.yaml:3: settings.networks.permit: "
                 "unknown key; expected one of: allow, deny", id="unknown networks key"),
    pytest.param("settings:\n  audit:\n    log_all: true\n", "p.yaml:3: settings.audit.log_all: "
                 "unknown key; expected one of: log_allowed, max_bytes, max_files, max_age, budget, "
                 "budget_interval, budget_distinct, ship, spool_max_bytes, ship_degraded_after",
                 id="unknown audit key"),
    pytest.param("settings:\n  secrets:\n    vault:\n      addr: http://127.0.0.1:8200\n"
                 "      auth: {token_env: T}\n      adress: x\n",
                 "p.yaml:6: settings.secrets.vault.adress: unknown key; expected one of: "
                 "addr, auth, ca_file, namespace, timeout", id="unknown secrets key"),
    # duplicates inside one file
    pytest.param("skills:\n  s: {}\n  s: {}\n", "p.yaml:3: skills.s: defined twice "
                 "(first on line 2)", id="skill defined twice in one file"),
    pytest.param(rule_yaml("host: a.example.com\nhost: b.example.com"),
                 "p.yaml:5: skills.s.allow[0].host: defined twice (first on line 4)",
                 id="key repeated inside a rule"),
    # skills
    pytest.param("skills:\n  -bad: {}\n", "p.yaml:2: skills.-bad: skill names use letters, "
                 "digits, '.', '_' and '-' (at most 64), and start with a letter or digit",
                 id="skill name starting with a hyphen"),
    pytest.param("skills:\n  s: [a]\n", "p.yaml:2: skills.s: must be a mapping (key: value)",
                 id="skill that is a list"),
    pytest.param("skills: [s]\n", "p.yaml:1: skills: must be a mapping (key: value)",
                 id="skills that is a list"),
    pytest.param("skills:\n  s:\n    mode: audit\n", "p.yaml:3: skills.s.mode: unknown mode "
                 "'audit'; use enforce or report", id="unknown skill mode"),
    pytest.param("skills:\n  s:\n    description: [x]\n", "p.yaml:3: skills.s.description: "
                 "must be a string", id="description that is a list"),
    pytest.param("skills:\n  s:\n    allow: {host: a.example.com}\n", "p.yaml:3: skills.s.allow: "
                 "must be a list", id="allow that is a mapping"),
    pytest.param("skills:\n  s:\n    allow: [a.example.com]\n", "p.yaml:3: skills.s.allow[0]: "
                 "must be a mapping (key: value)", id="allow entry that is a bare host"),
    # hosts
    pytest.param(rule_yaml("ports: [443]"), "p.yaml:4: skills.s.allow[0].host: missing; every "
                 "allow entry names a host", id="allow entry without a host"),
    pytest.param(rule_yaml('host: "*"'), "p.yaml:4: skills.s.allow[0].host: '*' would allow every "
                 "host; list the hosts the skill needs, e.g. api.example.com or *.example.com",
                 id="host star"),
    pytest.param(rule_yaml('host: "*.com"'), "p.yaml:4: skills.s.allow[0].host: '*.com' covers a "
                 "whole top-level domain; name the domain, e.g. *.example.com",
                 id="host wildcard over a TLD"),
    pytest.param(rule_yaml("host: a.*.b"), f"p.yaml:4: skills.s.allow[0].host: 'a.*.b': "
                 f"{_STAR_LABEL}", id="host star in a middle label"),
    pytest.param(rule_yaml("host: exa*mple.com"), f"p.yaml:4: skills.s.allow[0].host: "
                 f"'exa*mple.com': {_STAR_LABEL}", id="host star inside a label"),
    pytest.param(rule_yaml("host: api.example.com/path"), f"p.yaml:4: skills.s.allow[0].host: "
                 f"'api.example.com/path' {_NOT_HOST}", id="host with a path"),
    pytest.param(rule_yaml('host: "host:443"'), f"p.yaml:4: skills.s.allow[0].host: "
                 f"'host:443' {_NOT_HOST}", id="host with a port"),
    pytest.param(rule_yaml("host: 443"), "p.yaml:4: skills.s.allow[0].host: must be a string",
                 id="host that is a number"),
    pytest.param(rule_yaml("host: !foo a.example.com"), "p.yaml:4: skills.s.allow[0].host: "
                 "must be a string", id="host with an unknown YAML tag"),
    # ports
    pytest.param(rule_yaml("host: a.example.com\nports: [0]"), "p.yaml:5: "
                 "skills.s.allow[0].ports[0]: 0 is outside 1-65535", id="port 0"),
    pytest.param(rule_yaml("host: a.example.com\nports: [443, 65536]"), "p.yaml:5: "
                 "skills.s.allow[0].ports[1]: 65536 is outside 1-65535", id="port 65536"),
    pytest.param(rule_yaml('host: a.example.com\nports: ["abc"]'), "p.yaml:5: "
                 "skills.s.allow[0].ports[0]: must be a port number", id="port that is a word"),
    pytest.param(rule_yaml("host: a.example.com\nports: [true]"), "p.yaml:5: "
                 "skills.s.allow[0].ports[0]: must be a port number", id="port that is a boolean"),
    pytest.param(rule_yaml('host: a.example.com\nports: ["443"]'), "p.yaml:5: "
                 "skills.s.allow[0].ports[0]: must be a port number", id="port that is quoted"),
    pytest.param(rule_yaml("host: a.example.com\nports: [!!int abc]"), "p.yaml:5: "
                 "skills.s.allow[0].ports[0]: must be a port number",
                 id="port with a YAML int tag that is not a number"),
    pytest.param(rule_yaml("host: a.example.com\nports: 443"), "p.yaml:5: "
                 "skills.s.allow[0].ports: must be a list", id="ports that is not a list"),
    pytest.param(rule_yaml("host: a.example.com\nports: []"), "p.yaml:5: skills.s.allow[0].ports: "
                 "empty list; leave `ports` out for the default [443]", id="empty ports list"),
    # methods and paths
    pytest.param(rule_yaml("host: a.example.com\nmethods: [get]"), "p.yaml:5: "
                 "skills.s.allow[0].methods[0]: 'get' is not an HTTP method; write it in "
                 "capitals, e.g. GET", id="method in lowercase"),
    pytest.param(rule_yaml("host: a.example.com\nmethods: [CONNECT]"), "p.yaml:5: "
                 "skills.s.allow[0].methods[0]: CONNECT is how tunnels are opened, not a request "
                 "method to allow", id="CONNECT as a method"),
    pytest.param(rule_yaml("host: a.example.com\nmethods: GET"), "p.yaml:5: "
                 "skills.s.allow[0].methods: must be a list", id="methods that is not a list"),
    pytest.param(rule_yaml("host: a.example.com\npaths: [v1/invoices]"), "p.yaml:5: "
                 "skills.s.allow[0].paths[0]: 'v1/invoices' must start with '/'",
                 id="relative path"),
    pytest.param(rule_yaml('host: a.example.com\npaths: ["/v1/**/x"]'), "p.yaml:5: "
                 "skills.s.allow[0].paths[0]: '/v1/**/x': '**' is only allowed as the last "
                 "segment", id="double star in the middle of a path"),
    pytest.param(rule_yaml('host: a.example.com\npaths: ["/v1?a=1"]'), "p.yaml:5: "
                 "skills.s.allow[0].paths[0]: '/v1?a=1': paths are matched without the query "
                 "string; drop '?...'", id="path with a query"),
    # credentials
    pytest.param(rule_yaml("host: a.example.com\ncredential: stripe"), "p.yaml:5: "
                 "skills.s.allow[0].credential: 'stripe' is not defined under this skill's "
                 "`credentials` (none defined)", id="credential referenced but none defined"),
    pytest.param("skills:\n  s:\n    allow:\n      - host: a.example.com\n        credential: b\n"
                 "    credentials:\n      a: {secret: env:A}\n",
                 "p.yaml:5: skills.s.allow[0].credential: 'b' is not defined under this skill's "
                 "`credentials` (a)", id="credential referenced but another one defined"),
    pytest.param("skills:\n  s:\n    credentials:\n      c:\n        header: X-Key\n",
                 "p.yaml:5: skills.s.credentials.c.secret: missing; write vault:MOUNT/PATH#FIELD, "
                 "op://VAULT/ITEM/FIELD, doppler:PROJECT/CONFIG#NAME, env:NAME or "
                 "file:/ABSOLUTE/PATH", id="credential without a secret"),
    pytest.param("skills:\n  s:\n    credentials:\n      c: {secret: \"sk_live_123:456\"}\n",
                 "p.yaml:4: skills.s.credentials.c.secret: unknown secret scheme: write "
                 "vault:MOUNT/PATH#FIELD, op://VAULT/ITEM/FIELD, doppler:PROJECT/CONFIG#NAME, "
                 "env:NAME or file:/PATH",
                 id="secret value pasted instead of a reference is not echoed"),
    pytest.param("skills:\n  s:\n    credentials:\n      c: {secret: env:A, header: Host}\n",
                 "p.yaml:4: skills.s.credentials.c.header: Host cannot carry a credential",
                 id="credential in the Host header"),
    pytest.param("skills:\n  s:\n    credentials:\n      c: {secret: env:A, header: 'X Key'}\n",
                 "p.yaml:4: skills.s.credentials.c.header: 'X Key' is not a valid HTTP header "
                 "name", id="header name with a space"),
    pytest.param("skills:\n  s:\n    credentials:\n      c: {secret: env:A, format: Bearer}\n",
                 "p.yaml:4: skills.s.credentials.c.format: must contain {secret} exactly once, "
                 "e.g. 'Bearer {secret}'", id="format without the secret"),
    pytest.param("skills:\n  s:\n    credentials:\n      c: {secret: env:A, placeholder: short}\n",
                 "p.yaml:4: skills.s.credentials.c.placeholder: too short to be unmistakable; "
                 "use 12 or more characters", id="placeholder too short"),
    pytest.param("skills:\n  s:\n    credentials:\n      c:\n        secret: env:A\n"
                 "        placeholder: p_0123456789ab\n      d:\n        secret: env:B\n"
                 "        placeholder: p_0123456789ab\n",
                 "p.yaml:9: skills.s.credentials.d.placeholder: already used at p.yaml:6; "
                 "each credential needs its own", id="placeholder used twice"),
    # settings
    pytest.param("settings:\n  mode: audit\n", "p.yaml:2: settings.mode: unknown mode 'audit'; "
                 "use enforce or report", id="unknown global mode"),
    pytest.param("settings:\n  networks:\n    allow: [10.20.0.1/16]\n", "p.yaml:3: "
                 "settings.networks.allow[0]: 10.20.0.1/16 has host bits set; write 10.20.0.0/16",
                 id="network with host bits set"),
    pytest.param("settings:\n  networks:\n    deny: [intranet]\n", "p.yaml:3: "
                 "settings.networks.deny[0]: 'intranet' is not an IP network (write e.g. "
                 "10.20.0.0/16 or fd00::/8)",
                 id="network that is a word"),
    pytest.param("settings:\n  networks:\n    allow: 10.0.0.0/8\n", "p.yaml:3: "
                 "settings.networks.allow: must be a list", id="networks that is not a list"),
    pytest.param("settings:\n  dns:\n    nameservers: [dns.google]\n", "p.yaml:3: "
                 "settings.dns.nameservers[0]: nameserver 'dns.google' must be an IP address, "
                 "optionally with :port", id="nameserver that is a name"),
    pytest.param('settings:\n  dns:\n    nameservers: ["127.0.0.1:0"]\n', "p.yaml:3: "
                 "settings.dns.nameservers[0]: nameserver '127.0.0.1:0': the port must be a "
                 "number from 1 to 65535",
                 id="nameserver port 0"),
    pytest.param('settings:\n  dns:\n    nameservers: ["[::1]x"]\n', "p.yaml:3: "
                 "settings.dns.nameservers[0]: nameserver '[::1]x': write [IPv6]:port, e.g. "
                 "[::1]:5353", id="nameserver with junk after the IPv6 bracket"),
    # egress check once passed this, and `egress serve` then crashed in the resolver: the
    # loader and the resolver now read nameservers with the same parser.
    pytest.param('settings:\n  dns:\n    nameservers: ["[::1"]\n', "p.yaml:3: "
                 "settings.dns.nameservers[0]: nameserver '[::1': write [IPv6]:port, e.g. "
                 "[::1]:5353", id="nameserver with an unclosed IPv6 bracket"),
    pytest.param("settings:\n  dns:\n    nameservers: [127.0.0.1, dns.google]\n", "p.yaml:3: "
                 "settings.dns.nameservers[1]: nameserver 'dns.google' must be an IP address, "
                 "optionally with :port", id="second nameserver is named by its index"),
    pytest.param("settings:\n  dns:\n    timeout: 0\n", "p.yaml:3: settings.dns.timeout: must be "
                 "between 0.1 and 60", id="dns timeout zero"),
    pytest.param("settings:\n  dns:\n    timeout: true\n", "p.yaml:3: settings.dns.timeout: must "
                 "be a number", id="dns timeout that is a boolean"),
    pytest.param("settings:\n  dns:\n    min_ttl: 60\n    max_ttl: 30\n", "p.yaml:3: "
                 "settings.dns.min_ttl: must not exceed max_ttl", id="min ttl above max ttl"),
    pytest.param("settings:\n  audit:\n    log_allowed: maybe\n", "p.yaml:3: "
                 "settings.audit.log_allowed: must be true or false", id="log_allowed not a bool"),
    pytest.param("settings:\n  upstream_ca: missing.pem\n", "p.yaml:2: settings.upstream_ca: "
                 "{dir}/missing.pem does not exist; give a PEM file, relative to {dir}/p.yaml",
                 id="upstream CA file that does not exist"),
    pytest.param("settings:\n  secrets: 5\n", "p.yaml:2: settings.secrets: must be a mapping "
                 "with vault, onepassword, doppler, cache, max_age", id="secrets that is not a mapping"),
    pytest.param("settings:\n  secrets:\n    vault:\n      addr: http://127.0.0.1:8200\n"
                 "      auth: {token: s.abc}\n", "p.yaml:5: settings.secrets.vault.auth.token: "
                 "tokens do not belong in policy files: put it in an environment variable "
                 "(token_env: NAME) or a file (token_file: PATH)",
                 id="vault token written into the policy"),
    pytest.param("settings:\n  secrets:\n    cache: {ttl: !!float x}\n", "p.yaml:3: "
                 "settings.secrets: holds a value YAML cannot read; remove any !tag",
                 id="secrets with a broken YAML tag"),
]


@pytest.mark.parametrize("text, line", SINGLE_FILE_CASES)
def test_single_problem_is_reported_exactly(tmp_path: Path, text: str, line: str) -> None:
    expected = line.replace("{dir}", str(tmp_path)).replace(f"{tmp_path}/", "")
    assert error_lines(tmp_path, {"p.yaml": text}) == [expected]


# -- across files -----------------------------------------------------------------------------
def test_skill_defined_in_two_files_names_the_first(tmp_path: Path) -> None:
    lines = error_lines(tmp_path, {
        "a.yaml": "skills:\n  shared: {}\n",
        "b.yaml": "# second file\nskills:\n  other: {}\n  shared: {}\n",
    })
    assert lines == ["b.yaml:4: skills.shared: skill defined twice (first at a.yaml:2)"]


def test_settings_in_two_files_names_the_first(tmp_path: Path) -> None:
    lines = error_lines(tmp_path, {
        "a.yaml": "settings:\n  mode: enforce\n",
        "b.yaml": "skills: {}\nsettings:\n  mode: report\n",
    })
    assert lines == ["b.yaml:2: settings: settings are already defined in a.yaml:1; "
                     "keep them in one file"]


def test_placeholder_used_in_two_files(tmp_path: Path) -> None:
    cred = "    credentials:\n      c: {secret: env:A, placeholder: p_0123456789ab}\n"
    lines = error_lines(tmp_path, {
        "a.yaml": "skills:\n  one:\n" + cred,
        "b.yaml": "skills:\n  two:\n" + cred,
    })
    assert lines == ["b.yaml:4: skills.two.credentials.c.placeholder: already used at a.yaml:4; "
                     "each credential needs its own"]


def test_every_problem_in_every_file_is_reported_sorted_by_file_and_line(tmp_path: Path) -> None:
    lines = error_lines(tmp_path, {
        "b.yaml": rule_yaml('host: "*"\nports: [0]\nmethods: [get]'),
        "a.yaml": "skills:\n  s1:\n    mode: audit\n  s2:\n    allows: []\n",
        "c.yaml": "skills:\n  s1: {}\n",
        "d.yaml": "skills: [\n",
    })
    assert lines == [
        "a.yaml:3: skills.s1.mode: unknown mode 'audit'; use enforce or report",
        "a.yaml:5: skills.s2.allows: unknown key; expected one of: mode, description, allow, "
        "credentials, limits",
        "b.yaml:4: skills.s.allow[0].host: '*' would allow every host; list the hosts the skill "
        "needs, e.g. api.example.com or *.example.com",
        "b.yaml:5: skills.s.allow[0].ports[0]: 0 is outside 1-65535",
        "b.yaml:6: skills.s.allow[0].methods[0]: 'get' is not an HTTP method; write it in "
        "capitals, e.g. GET",
        "c.yaml:2: skills.s1: skill defined twice (first at a.yaml:2)",
        "d.yaml:2: yaml: not valid YAML: did not find expected node content",
    ]


def test_errors_from_texts_keep_the_given_file_names() -> None:
    with pytest.raises(PolicyErrors) as info:
        load_policy_texts([("team/b.yaml", "skills:\n  s:\n    mode: x\n"),
                           ("team/a.yaml", "nope: 1\n")])
    assert str(info.value).splitlines() == [
        "team/a.yaml:1: nope: unknown key; expected one of: settings, skills",
        "team/b.yaml:3: skills.s.mode: unknown mode 'x'; use enforce or report",
    ]


# -- the directory itself --------------------------------------------------------------------
def test_directory_without_yaml_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("skills: {}\n")
    with pytest.raises(PolicyErrors) as info:
        load_policy_dir(tmp_path)
    assert str(info.value) == f"{tmp_path}:0: policies: no *.yaml files; write at least one policy"


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyErrors) as info:
        load_policy_dir(tmp_path / "nope")
    assert str(info.value) == (f"{tmp_path}/nope:0: policies: not a directory; "
                               f"pass the policy directory")


def test_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_bytes(b"skills:\n  caf\xe9: {}\n")
    with pytest.raises(PolicyErrors) as info:
        load_policy_dir(tmp_path)
    [err] = info.value.errors
    assert (err.file, err.line, err.field) == (str(tmp_path / "p.yaml"), 0, "file")
    assert err.message.startswith("cannot read: 'utf-8' codec can't decode byte 0xe9")


@pytest.mark.parametrize("text", [
    pytest.param("", id="empty file"),
    pytest.param("# everything commented out\n", id="only comments"),
    pytest.param("skills: {}\n", id="empty skills mapping"),
])
def test_empty_file_is_a_valid_policy(tmp_path: Path, text: str) -> None:
    (tmp_path / "p.yaml").write_text(text)
    policy = load_policy_dir(tmp_path)
    assert (dict(policy.skills), policy.rule_count) == ({}, 0)
    assert policy.files == (str(tmp_path / "p.yaml"),)


def test_only_yaml_and_yml_files_are_read(tmp_path: Path) -> None:
    write(tmp_path, {
        "a.yaml": "skills:\n  a: {}\n",
        "b.yml": "skills:\n  b: {}\n",
        "c.yaml.bak": "skills: [\n",
        "README.md": "not yaml: [\n",
    })
    assert sorted(load_policy_dir(tmp_path).skills) == ["a", "b"]


# -- what a valid policy becomes ----------------------------------------------------------------
def test_valid_fixture_builds_the_model() -> None:
    policy = load_policy_dir(FIXTURES / "valid")
    file = str(FIXTURES / "valid" / "policy.yaml")
    stripe, weather = policy.skills["stripe-invoices"], policy.skills["weather"]

    assert stripe.mode is Mode.ENFORCE
    assert stripe.rules == (Rule(
        host="api.stripe.com", wildcard=False, ports=frozenset({443}),
        methods=frozenset({"GET", "HEAD"}), paths=("/v1/invoices", "/v1/invoices/*"),
        credential="stripe-read", source=Source(file, 17),
    ),)
    assert dict(stripe.credentials) == {"stripe-read": Credential(
        name="stripe-read", secret=SecretRef("env", "STRIPE_KEY"), header="Authorization",
        format="Bearer {secret}", placeholder="sk_live_egress_placeholder_0000000000000000",
        source=Source(file, 22),
    )}
    assert weather.mode is Mode.REPORT
    assert [(r.host, r.wildcard, sorted(r.ports), r.needs_interception) for r in weather.rules] == [
        ("weather.example", True, [443, 8443], False),
        ("xn--bcher-kva.example", False, [443], True),
    ]
    api_key = weather.credentials["api-key"]
    assert (api_key.header, api_key.format, api_key.placeholder) == ("X-Api-Key", "{secret}", None)

    settings = policy.settings
    assert settings.dns.nameservers == ("127.0.0.1:5353", "[::1]:5353")
    assert settings.dns.timeout == 2.0
    assert [str(n) for n in settings.networks.allow] == ["10.20.0.0/16"]
    assert settings.audit.log_allowed is True
    assert settings.source == Source(file, 2)
    assert policy.rule_count == 3
    assert policy.files == (file,)


def test_upstream_ca_is_resolved_relative_to_the_policy_file(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    write(tmp_path, {"p.yaml": "settings:\n  upstream_ca: certs/ca.pem\n"})
    assert load_policy_dir(tmp_path).settings.upstream_ca == str(tmp_path / "certs" / "ca.pem")


def test_no_settings_gives_the_defaults(tmp_path: Path) -> None:
    write(tmp_path, {"p.yaml": "skills: {}\n"})
    settings = load_policy_dir(tmp_path).settings
    assert (settings.mode, settings.dns.nameservers, settings.networks.allow,
            settings.audit.log_allowed, settings.source) == (Mode.ENFORCE, (), (), False, None)


@pytest.mark.parametrize("global_mode, skill_modes", [
    pytest.param(None, {"plain": Mode.ENFORCE, "enforcing": Mode.ENFORCE, "reporting": Mode.REPORT},
                 id="without settings every skill keeps its own mode or enforces"),
    pytest.param("enforce", {"plain": Mode.ENFORCE, "enforcing": Mode.ENFORCE,
                             "reporting": Mode.REPORT},
                 id="global enforce changes nothing"),
    pytest.param("report", {"plain": Mode.REPORT, "enforcing": Mode.ENFORCE,
                            "reporting": Mode.REPORT},
                 id="global report applies only to skills without their own mode"),
])
def test_global_mode_is_only_a_default(
    tmp_path: Path, global_mode: str | None, skill_modes: dict[str, Mode]
) -> None:
    files = {"skills.yaml": "skills:\n  plain: {}\n  enforcing: {mode: enforce}\n"
                            "  reporting: {mode: report}\n"}
    if global_mode:
        files["settings.yaml"] = f"settings:\n  mode: {global_mode}\n"
    policy = load_policy_dir(write(tmp_path, files))
    assert {n: s.mode for n, s in policy.skills.items()} == skill_modes


# -- the digest -------------------------------------------------------------------------------
def test_digest_changes_when_a_file_changes_and_not_otherwise(tmp_path: Path) -> None:
    write(tmp_path, {"a.yaml": "skills:\n  a: {}\n", "b.yaml": "skills:\n  b: {}\n"})
    first = load_policy_dir(tmp_path).digest
    assert load_policy_dir(tmp_path).digest == first  # same files, same digest

    (tmp_path / "b.yaml").write_text("skills:\n  b: {}\n# a comment\n")
    changed = load_policy_dir(tmp_path).digest
    assert changed != first

    (tmp_path / "b.yaml").write_text("skills:\n  b: {}\n")
    assert load_policy_dir(tmp_path).digest == first  # back to the same text, same digest

    (tmp_path / "c.yaml").write_text("")
    assert load_policy_dir(tmp_path).digest not in (first, changed)  # a new (even empty) file


def test_digest_is_short_hex() -> None:
    digest = load_policy_texts([("p.yaml", "skills: {}\n")]).digest
    assert len(digest) == 16 and int(digest, 16) >= 0
