"""Wildcards over public suffixes are refused; rules that can never work are warned about.

The Public Suffix List comes from the `publicsuffixlist` package (offline). Both sections
count: `*.co.uk` (ICANN) and `*.github.io` (private: GitHub hands out names under it) allow
every owner's names at once, so they are refused like `*.com`.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from egress.cli.main import main
from egress.cli.policy import suggest
from egress.errors import PolicyErrors
from egress.policy.lint import policy_warnings
from egress.policy.load import load_policy_texts
from egress.policy.match import HostPattern, parse_host_pattern


def _refusal(base: str, section: str, raw: str | None = None) -> str:
    return (f"'{raw or '*.' + base}': {base} is a public suffix (Public Suffix List, {section} section): "
            f"names under it belong to unrelated owners, so this would allow all of them; "
            f"name the owner's domain instead, e.g. *.example.{base} or api.example.{base}")


@pytest.mark.parametrize("pattern, message", [
    pytest.param("*.co.uk", _refusal("co.uk", "ICANN"), id="ICANN second-level suffix"),
    pytest.param("*.CO.UK.", _refusal("co.uk", "ICANN", "*.CO.UK."), id="spelling is normalised first"),
    pytest.param("*.tokyo.jp", _refusal("tokyo.jp", "ICANN"), id="geographic suffix"),
    pytest.param("*.github.io", _refusal("github.io", "private"), id="private section: GitHub Pages"),
    pytest.param("*.s3.amazonaws.com", _refusal("s3.amazonaws.com", "private"),
                 id="private section: S3 buckets"),
    pytest.param("*.githubusercontent.com", _refusal("githubusercontent.com", "private"),
                 id="private section: GitHub user content"),
    pytest.param("*.anything.ck", _refusal("anything.ck", "ICANN"),
                 id="a name covered by a wildcard rule of the list (*.ck)"),
])
def test_wildcard_over_a_public_suffix_is_refused(pattern: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_host_pattern(pattern)
    assert str(exc.value) == message


@pytest.mark.parametrize("pattern, expected", [
    pytest.param("*.example.co.uk", HostPattern("example.co.uk", True), id="a domain under co.uk"),
    pytest.param("*.myorg.github.io", HostPattern("myorg.github.io", True),
                 id="one owner's GitHub Pages domain"),
    pytest.param("*.www.ck", HostPattern("www.ck", True), id="an exception of the list (!www.ck)"),
    pytest.param("github.io", HostPattern("github.io", False), id="an exact suffix is one host"),
    pytest.param("co.uk", HostPattern("co.uk", False), id="an exact ICANN suffix is one host"),
    pytest.param("*.corp.internal", HostPattern("corp.internal", True),
                 id="a private name under a TLD the list does not know"),
    pytest.param("*.amazonaws.com", HostPattern("amazonaws.com", True),
                 id="a domain with suffixes below it is allowed (and warned about)"),
])
def test_wildcard_over_an_owned_domain_is_accepted(pattern: str, expected: HostPattern) -> None:
    assert parse_host_pattern(pattern) == expected


def test_loader_reports_file_line_and_field() -> None:
    text = textwrap.dedent("""\
        skills:
          pages:
            allow:
              - host: docs.example.com
              - host: "*.github.io"
        """)
    with pytest.raises(PolicyErrors) as exc:
        load_policy_texts([("p.yaml", text)])
    assert [str(e) for e in exc.value.errors] == [
        f"p.yaml:5: skills.pages.allow[1].host: {_refusal('github.io', 'private')}"]


# -- warnings ----------------------------------------------------------------------------

WARN_POLICY = """\
settings:
  networks: {allow: ["10.20.0.0/16", "127.0.0.0/8"], deny: ["203.0.113.0/24"]}
skills:
  s:
    allow:
      - host: "*.amazonaws.com"
      - host: 10.20.1.1
      - host: 10.30.1.1
      - host: 169.254.169.254
      - host: 203.0.113.9
      - host: 192.168.1.1
      - host: metadata.google.internal
      - host: api.example.com
      - host: "*.example.com"
      - host: 127.0.0.1
  t:
    allow:
      - host: localhost
      - host: a.localhost
"""


def test_warnings_name_rules_that_can_never_work() -> None:
    policy = load_policy_texts([("w.yaml", WARN_POLICY)])
    got = [(w.line, w.field, w.message) for w in policy_warnings(policy)]
    amazon = got[0][2]  # how many suffixes: whatever the installed list says
    assert got[0][:2] == (6, "skills.s.allow[0].host")
    assert amazon.startswith("*.amazonaws.com also covers ") and " public suffixes under " \
        "amazonaws.com (e.g. " in amazon
    assert amazon.endswith("where unrelated owners have names; list the hosts the skill needs")
    assert got[1:] == [
        (8, "skills.s.allow[2].host",
         '10.30.1.1 is a private (RFC 1918) address, which the network guard refuses '
         '(blocked_address); if the skill really needs it, add it to settings.networks.allow, '
         'e.g. allow: ["10.30.1.1/32"]'),
        (9, "skills.s.allow[3].host",
         "169.254.169.254 is a cloud metadata address, which egress refuses even with "
         "settings.networks.allow: this rule can never work"),
        (10, "skills.s.allow[4].host",
         "203.0.113.9 is in a network denied by settings.networks.deny: every request is "
         "refused (blocked_address); remove the rule or that deny entry"),
        (11, "skills.s.allow[5].host",
         '192.168.1.1 is a private (RFC 1918) address, which the network guard refuses '
         '(blocked_address); if the skill really needs it, add it to settings.networks.allow, '
         'e.g. allow: ["192.168.1.1/32"]'),
        (12, "skills.s.allow[6].host",
         "metadata.google.internal is the cloud metadata service (169.254.169.254), which "
         "egress refuses even with settings.networks.allow: this rule can never work"),
    ]
    # Not warned: 10.20.1.1 and 127.0.0.1 (opened by networks.allow), localhost for skill t
    # (127.0.0.0/8 is open; ::1 is not, but one reachable address is enough), names and an
    # ordinary wildcard.


def test_localhost_is_warned_about_without_networks_allow() -> None:
    policy = load_policy_texts([("l.yaml", "skills:\n  t:\n    allow:\n      - host: localhost\n"
                                            "      - host: api.localhost\n")])
    assert [(w.line, w.message) for w in policy_warnings(policy)] == [
        (4, 'localhost (always loopback, RFC 6761) is loopback, which the network guard refuses '
            '(blocked_address); if the skill really needs it, add it to settings.networks.allow, '
            'e.g. allow: ["127.0.0.1/32", "::1/128"]'),
        (5, 'api.localhost (always loopback, RFC 6761) is loopback, which the network guard '
            'refuses (blocked_address); if the skill really needs it, add it to '
            'settings.networks.allow, e.g. allow: ["127.0.0.1/32", "::1/128"]'),
    ]


def test_check_prints_warnings_and_exits_zero(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text(WARN_POLICY)
    assert main(["check", str(tmp_path)]) == 0
    out = capsys.readouterr()
    lines = out.err.splitlines()
    assert len(lines) == 6
    assert lines[2] == (f"{tmp_path / 'w.yaml'}:9: skills.s.allow[3].host: warning: "
                        f"169.254.169.254 is a cloud metadata address, which egress refuses even "
                        f"with settings.networks.allow: this rule can never work")
    assert out.out.startswith("ok: 1 files, 2 skills, 12 rules") and out.out.endswith(
        ", 6 warnings\n")
    assert main(["check", "--json", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and [w["line"] for w in data["warnings"]] == [6, 8, 9, 10, 11, 12]


def test_suggest_never_collapses_into_a_public_suffix() -> None:
    records = [{"decision": "report", "reason": "host_not_allowed", "kind": "connect",
                "host": h, "port": 443, "skill": "s", "ts": "2025-01-01T00:00:00Z"}
               for h in ("a.github.io", "b.github.io", "x.example.com", "y.example.com")]
    text = suggest("s", records, wildcards=True)
    assert text is not None
    assert '"*.example.com"' in text and '"*.github.io"' not in text
    assert '"a.github.io"' in text and '"b.github.io"' in text
    load_policy_texts([("s.yaml", text)])  # and the suggestion passes egress check
