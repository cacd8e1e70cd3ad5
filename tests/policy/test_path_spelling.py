"""Path spelling: rules with `paths` judge the path as forwarded, and refuse what has two readings.

path_spelling_problem() is a table (plain spellings pass, every other spelling names its
problem); decide() turns a problem into `path_not_canonical` only where a rule looks at paths;
bound_to() never binds a credential to an unplain path.
"""

from __future__ import annotations

import pytest

from egress.credentials.broker import CredentialBroker, bound_to
from egress.policy.decide import Destination, Verdict, decide
from egress.policy.load import load_policy_texts
from egress.policy.match import path_spelling_problem
from egress.policy.model import PolicySet
from egress.reasons import Problem, Reason


@pytest.mark.parametrize("path", [
    pytest.param("/", id="root"),
    pytest.param("/v1/invoices", id="plain path"),
    pytest.param("/v1/invoices/", id="one trailing slash"),
    pytest.param("/v1/invoices/in_1-2.x~y", id="unreserved characters"),
    pytest.param("/v1/a:b@c!$&'()*+,=", id="sub-delimiters, colon and at sign"),
    pytest.param("/v1/projects/p:run", id="colon custom method (Google APIs)"),
    pytest.param("/v1/caf%C3%A9", id="escaped non-ASCII bytes"),
    pytest.param("/v1/caf%c3%a9", id="lowercase hex in an escape"),
    pytest.param("/v1/a%20b", id="escaped space"),
    pytest.param("/v1/a%3Fb%23c%3Bd", id="escaped '?', '#' and ';' are data"),
    pytest.param("/v1/.hidden", id="a segment starting with a dot"),
    pytest.param("/v1/...", id="three dots are a name, not a dot segment"),
])
def test_plain_spellings_pass(path: str) -> None:
    assert path_spelling_problem(path) is None


@pytest.mark.parametrize("path, problem", [
    pytest.param("/v1/invoices/../customers", "'..' path segment", id="dot-dot"),
    pytest.param("/v1/./invoices", "'.' path segment", id="dot"),
    pytest.param("/v1/invoices/..", "'..' path segment", id="dot-dot at the end"),
    pytest.param("/v1/invoices/./", "'.' path segment", id="dot before a trailing slash"),
    pytest.param("/..", "'..' path segment", id="dot-dot at the root"),
    pytest.param("/v1//invoices", "empty path segment ('//')", id="double slash"),
    pytest.param("//v1/invoices", "empty path segment ('//')", id="leading double slash"),
    pytest.param("/v1/invoices//", "empty path segment ('//')", id="two trailing slashes"),
    pytest.param("/v1/%2e%2e/x", "percent-encoded '.'", id="encoded dot-dot"),
    pytest.param("/v1/%2E./x", "percent-encoded '.'", id="half-encoded dot-dot"),
    pytest.param("/v1/%2e", "percent-encoded '.'", id="encoded dot"),
    pytest.param("/v1/%69nvoices", "percent-escape of the unreserved character 'i'",
                 id="escaped letter"),
    pytest.param("/v1/in_%31", "percent-escape of the unreserved character '1'",
                 id="escaped digit"),
    pytest.param("/v1/a%7Eb", "percent-escape of the unreserved character '~'", id="escaped tilde"),
    pytest.param("/v1/a%2Fb", "percent-encoded '/'", id="encoded slash"),
    pytest.param("/v1/a%2fb", "percent-encoded '/'", id="lowercase encoded slash"),
    pytest.param("/v1/a%5Cb", "percent-encoded '\\\\'", id="encoded backslash"),
    pytest.param("/v1/%252e%252e", "percent-encoded '%' (double encoding)", id="double encoding"),
    pytest.param("/v1/a%00b", "percent-encoded control character", id="encoded NUL"),
    pytest.param("/v1/a%0d%0ab", "percent-encoded control character", id="encoded CR LF"),
    pytest.param("/v1/a%7fb", "percent-encoded control character", id="encoded DEL"),
    pytest.param("/v1/%zz", "malformed percent-escape", id="bad escape"),
    pytest.param("/v1/%2", "malformed percent-escape", id="truncated escape"),
    pytest.param("/v1/%", "malformed percent-escape", id="bare percent"),
    pytest.param("/v1/invoices\\..\\customers", "backslash in the path", id="backslashes"),
    pytest.param("/v1/invoices/..;/customers", "';' in the path (path parameters)",
                 id="Tomcat dot-dot with a parameter"),
    pytest.param("/v1/invoices;jsessionid=1", "';' in the path (path parameters)",
                 id="path parameter"),
    pytest.param("/v1/invoices#/../../customers", "character '#' in the path", id="fragment"),
    pytest.param("/v1/a b", "character ' ' in the path", id="space"),
    pytest.param("/v1/a\x00b", "character '\\x00' in the path", id="NUL"),
    pytest.param("/v1/a\rb", "character '\\r' in the path", id="CR"),
    pytest.param("/v1/caf\u00e9", "character '\\xe9' in the path", id="raw non-ASCII"),
    pytest.param("/v1/a\udcffb", "character '\\udcff' in the path", id="raw byte 0xff"),
    pytest.param("/v1/a|b", "character '|' in the path", id="pipe"),
    pytest.param("/v1/a{b}", "character '{' in the path", id="brace"),
    pytest.param("v1/invoices", "the path does not start with '/'", id="relative"),
    pytest.param("*", "the path does not start with '/'", id="asterisk form"),
    pytest.param("", "the path does not start with '/'", id="empty"),
    pytest.param("https://other/v1/invoices", "the path does not start with '/'",
                 id="absolute URI"),
])
def test_unplain_spellings_name_their_problem(path: str, problem: str) -> None:
    assert path_spelling_problem(path) == problem


POLICY = """
skills:
  s:
    allow:
      - host: api.example.org
        methods: [GET]
        paths: ["/v1/invoices", "/v1/invoices/*"]
        credential: key
      - host: api.example.org
        methods: [POST]
      - host: open.example.org
        credential: key
      - host: watch.example.org
        paths: ["/v1/invoices/*"]
    credentials:
      key: {secret: "env:K", placeholder: "ph_0000000000000000"}
  r:
    mode: report
    allow:
      - host: api.example.org
        paths: ["/v1/*"]
"""


@pytest.fixture(scope="module")
def policy() -> PolicySet:
    return load_policy_texts([("p.yaml", POLICY)])


@pytest.mark.parametrize("skill, host, method, path, verdict, reason, detail", [
    pytest.param("s", "api.example.org", "GET", "/v1/invoices/in_1", Verdict.ALLOW,
                 Reason.ALLOWED, None, id="plain path on a path rule"),
    pytest.param("s", "api.example.org", "GET", "/v1/invoices/x/../../customers", Verdict.DENY,
                 Reason.PATH_NOT_CANONICAL, "'..' path segment", id="dot-dot on a path rule"),
    pytest.param("s", "api.example.org", "GET", "/v1/invoices/%2e%2e", Verdict.DENY,
                 Reason.PATH_NOT_CANONICAL, "percent-encoded '.'",
                 id="encoded dot-dot that a star would match"),
    pytest.param("s", "api.example.org", "GET", "/v1/customers", Verdict.DENY,
                 Reason.PATH_NOT_ALLOWED, None, id="plain path outside the rule"),
    pytest.param("s", "api.example.org", "POST", "/v1//x/../y", Verdict.ALLOW, Reason.ALLOWED,
                 None, id="rule without paths does not judge the spelling"),
    pytest.param("s", "open.example.org", "GET", "/a/../b;c", Verdict.ALLOW, Reason.ALLOWED,
                 None, id="host without path rules"),
    pytest.param("s", "watch.example.org", "GET", "/v1/invoices//", Verdict.DENY,
                 Reason.PATH_NOT_CANONICAL, "empty path segment ('//')",
                 id="two trailing slashes"),
    pytest.param("r", "api.example.org", "GET", "/v1/../admin", Verdict.REPORT,
                 Reason.PATH_NOT_CANONICAL, "'..' path segment",
                 id="report mode reports an unplain path with its detail"),
])
def test_decide_judges_the_spelling_only_on_path_rules(
        policy: PolicySet, skill: str, host: str, method: str, path: str, verdict: Verdict,
        reason: Reason, detail: str | None) -> None:
    decision = decide(policy, skill, Destination(host, 443, method, path))
    assert (decision.verdict, decision.reason, decision.detail) == (verdict, reason, detail)


@pytest.mark.parametrize("path, bound", [
    pytest.param("/v1/invoices/in_1", True, id="plain path under the rule"),
    pytest.param("/v1/invoices/..", False, id="dot-dot a star would match"),
    pytest.param("/v1/invoices/%69n_1", False, id="escaped letter"),
    pytest.param(None, False, id="no path"),
])
def test_credential_is_never_bound_to_an_unplain_path(policy: PolicySet, path: str | None,
                                                        bound: bool) -> None:
    skill = policy.skills["s"]
    assert bound_to(skill, "key", "api.example.org", 443, path) is bound
    assert bound_to(skill, "key", "open.example.org", 443, path) is True  # no paths: any spelling


@pytest.mark.parametrize("path, refused", [
    pytest.param("/v1/invoices/../x", True, id="unplain path: the key is not bound there"),
    pytest.param("/v1/invoices/in_1", False, id="plain path under the key's rule"),
])
async def test_placeholder_on_an_unplain_path_is_exfiltration(policy: PolicySet, path: str,
                                                               refused: bool) -> None:
    # POST is allowed on any path by a rule without a credential; the placeholder belongs to
    # the GET rule's key, bound to /v1/invoices/* only.
    skill = policy.skills["s"]
    dest = Destination("api.example.org", 443, "POST", path)
    decision = decide(policy, "s", dest)
    assert decision.allowed and decision.rule is not None and decision.rule.credential is None
    outcome = await CredentialBroker().prepare(
        None, skill, decision.rule, dest,  # type: ignore[arg-type]  # no fetch happens
        [("Authorization", "Bearer ph_0000000000000000")], path, verified_tls=True)
    if refused:
        assert isinstance(outcome, Problem) and outcome.reason is Reason.CREDENTIAL_EXFILTRATION
    else:
        assert outcome is None
