"""Policy for the protocol envelope: the `raw_tcp` rule field and `settings.connections`."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from egress.errors import PolicyErrors
from egress.policy.decide import Destination, decide
from egress.policy.load import load_policy_texts
from egress.policy.model import ConnectionSettings


def load(text: str):  # type: ignore[no-untyped-def]
    return load_policy_texts([("p.yaml", dedent(text))])


def errors(text: str) -> list[str]:
    with pytest.raises(PolicyErrors) as info:
        load(text)
    return [str(e) for e in info.value.errors]


# -- raw_tcp ---------------------------------------------------------------------------------

def test_raw_tcp_is_off_unless_a_rule_says_so() -> None:
    policy = load("""
        skills:
          s:
            allow:
              - {host: tls.example.com}
              - {host: db.example.com, ports: [5432], raw_tcp: true}
              - {host: off.example.com, ports: [22], raw_tcp: false}
        """)
    assert not decide(policy, "s", Destination("tls.example.com", 443)).raw_tcp
    assert decide(policy, "s", Destination("db.example.com", 5432)).raw_tcp
    assert not decide(policy, "s", Destination("off.example.com", 22)).raw_tcp


def test_raw_tcp_never_where_another_rule_looks_inside() -> None:
    # Interception wins: a rule that checks methods on the same host and port must keep seeing
    # every request, so no raw relay there.
    policy = load("""
        skills:
          s:
            allow:
              - {host: api.example.com, ports: [8443], raw_tcp: true}
              - {host: "*.example.com", ports: [8443], methods: [GET]}
        """)
    decision = decide(policy, "s", Destination("api.example.com", 8443))
    assert decision.intercept and not decision.raw_tcp


@pytest.mark.parametrize("extra, fields", [
    pytest.param("methods: [GET]", "methods", id="with methods"),
    pytest.param('paths: ["/x"]', "paths", id="with paths"),
    pytest.param("credential: k", "credential", id="with a credential"),
    pytest.param('methods: [GET], paths: ["/x"]', "methods, paths", id="with methods and paths"),
])
def test_raw_tcp_cannot_go_with_rules_that_look_inside(extra: str, fields: str) -> None:
    text = f"""\
skills:
  s:
    credentials:
      k: {{secret: "env:K"}}
    allow:
      - {{host: db.example.com, ports: [5432],
         raw_tcp: true, {extra}}}
"""
    assert errors(text) == [
        f"p.yaml:7: skills.s.allow[0].raw_tcp: cannot be combined with {fields}: egress cannot "
        f"look inside a raw TCP relay; drop raw_tcp, or drop {fields} from this rule"]


def test_raw_tcp_must_be_a_boolean() -> None:
    assert errors("skills:\n  s:\n    allow:\n      - host: db.example.com\n"
                  "        raw_tcp: yes please\n") == [
        "p.yaml:5: skills.s.allow[0].raw_tcp: must be true or false"]


# -- settings.connections --------------------------------------------------------------------

def test_connection_settings_default() -> None:
    assert load("skills: {}\n").settings.connections == ConnectionSettings(
        request_head_timeout=20.0, idle_before_auth=30.0, idle_timeout=300.0,
        clienthello_timeout=10.0, max_unauthenticated_per_address=256)


def test_connection_settings_read_durations_and_the_cap() -> None:
    policy = load("""
        settings:
          connections:
            request_head_timeout: 5s
            idle_before_auth: 10
            idle_timeout: 1h
            clienthello_timeout: 2s
            max_unauthenticated_per_address: 32
        """)
    assert policy.settings.connections == ConnectionSettings(5.0, 10.0, 3600.0, 2.0, 32)


@pytest.mark.parametrize("line, message", [
    pytest.param("request_head_timeout: 0", "settings.connections.request_head_timeout: must be "
                 "between 1s and 3600s", id="zero head timeout"),
    pytest.param("idle_timeout: soon", "settings.connections.idle_timeout: 'soon' is not a "
                 "duration; write e.g. 30s, 15m, 1h30m or 7d", id="not a duration"),
    pytest.param("clienthello_timeout: 1h", "settings.connections.clienthello_timeout: must be "
                 "between 1s and 600s", id="ClientHello wait too long"),
    pytest.param("max_unauthenticated_per_address: 0", "settings.connections."
                 "max_unauthenticated_per_address: must be between 1 and 1000000", id="zero cap"),
    pytest.param("max_unauthenticated_per_address: many", "settings.connections."
                 "max_unauthenticated_per_address: must be a whole number", id="cap not a number"),
    pytest.param("idle: 5s", "settings.connections.idle: unknown key; expected one of: "
                 "request_head_timeout, idle_before_auth, idle_timeout, clienthello_timeout, "
                 "max_unauthenticated_per_address", id="unknown key"),
])
def test_connection_settings_errors_name_the_line(line: str, message: str) -> None:
    assert errors(f"settings:\n  connections:\n    {line}\n") == [f"p.yaml:3: {message}"]


def test_check_cli_accepts_the_new_fields(tmp_path: Path) -> None:
    from egress.policy.load import load_policy_dir
    (tmp_path / "p.yaml").write_text(dedent("""
        settings:
          connections: {idle_timeout: 10m}
        skills:
          s:
            allow: [{host: db.example.com, ports: [5432], raw_tcp: true}]
        """))
    policy = load_policy_dir(tmp_path)
    assert policy.skills["s"].rules[0].raw_tcp
    assert policy.settings.connections.idle_timeout == 600.0
