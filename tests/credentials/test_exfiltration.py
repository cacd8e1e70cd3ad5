"""The credential exfiltration rules as a table: which requests may carry which key.

A skill holds placeholders; egress puts the real key only into requests to the hosts its rules
bind the key to, over verified TLS, and refuses a placeholder or a key (once fetched) anywhere
else, raw or encoded, in any header or the target. End to end: tests/e2e/test_credentials.py
and tests/adversarial/test_credential_echo.py."""

from __future__ import annotations

import base64

import pytest

from egress.credentials.broker import CredentialBroker, Injected
from egress.policy.decide import Destination, decide
from egress.policy.load import load_policy_texts
from egress.policy.secret_settings import CacheSettings
from egress.reasons import Problem, Reason
from egress.secrets import SecretCache
from tests.fakes import FakeClock, FakeSecretBackend

POLICY = """
skills:
  s:
    allow:
      - host: pay.example.com
        paths: ["/v1/*"]
        credential: pay
      - host: "*.mail.example.com"
        credential: mail
      - host: pay.example.com
        paths: ["/public/*"]
      - host: other.example.com
    credentials:
      pay: {secret: "env:PAY", placeholder: "ph_pay_000000000000000"}
      mail: {secret: "env:MAIL", header: X-Api-Key, placeholder: "ph_mail_00000000000000"}
"""
PAY, MAIL = "ph_pay_000000000000000", "ph_mail_00000000000000"
REAL_PAY = "sk_live_pay_real_value_123"
B64 = base64.b64encode(PAY.encode()).decode()


def b(header: str, value: str) -> tuple[str, str]:
    return (header, value)


CASES = [
    # (host, path, headers, verified TLS) -> None (nothing to do), "pay"/"mail" (injected), or
    # the refusal reason
    pytest.param("pay.example.com", "/v1/charges", [b("Authorization", f"Bearer {PAY}")], True,
                 "pay", id="placeholder to its host and path: the key goes in"),
    pytest.param("pay.example.com", "/v1/charges", [], True, "pay",
                 id="no placeholder: the rule's header is set"),
    pytest.param("a.mail.example.com", "/send", [b("X-Api-Key", MAIL)], True, "mail",
                 id="wildcard host binds too"),
    pytest.param("other.example.com", "/", [b("Authorization", f"Bearer {PAY}")], True,
                 Reason.CREDENTIAL_EXFILTRATION, id="placeholder to another host"),
    pytest.param("pay.example.com", "/public/x", [b("Authorization", f"Bearer {PAY}")], True,
                 Reason.CREDENTIAL_EXFILTRATION, id="its host, but a path it is not bound to"),
    pytest.param("pay.example.com", "/v1/charges", [b("X-Api-Key", MAIL)], True,
                 Reason.CREDENTIAL_EXFILTRATION, id="another credential's placeholder"),
    pytest.param("other.example.com", f"/?k={PAY}", [], True,
                 Reason.CREDENTIAL_EXFILTRATION, id="in the query string"),
    pytest.param("other.example.com", "/", [b("X-Data", B64)], True,
                 Reason.CREDENTIAL_EXFILTRATION, id="base64-encoded"),
    pytest.param("other.example.com", "/", [b("X-A", PAY[:10]), b("X-B", PAY[10:])], True,
                 Reason.CREDENTIAL_EXFILTRATION, id="split across two headers"),
    pytest.param("other.example.com", "/", [b("X-A", PAY.upper())], True, None,
                 id="a different string is not the placeholder"),
    pytest.param("other.example.com", "/", [b("X-A", REAL_PAY)], True,
                 Reason.CREDENTIAL_EXFILTRATION, id="the real key, once egress fetched it"),
    pytest.param("pay.example.com", "/v1/charges", [], False, Reason.TLS_REQUIRED,
                 id="its host, but not over verified TLS"),
    pytest.param("other.example.com", "/", [], True, None, id="nothing carried: nothing to do"),
]


@pytest.mark.parametrize("host, path, headers, tls, expected", CASES)
async def test_exfiltration_rules(host: str, path: str, headers: list[tuple[str, str]],
                                  tls: bool, expected: str | Reason | None) -> None:
    policy = load_policy_texts([("p.yaml", POLICY)])
    cache = SecretCache({"env": FakeSecretBackend({"PAY": REAL_PAY, "MAIL": "mail-real-key"})},
                        CacheSettings(), clock=FakeClock())
    broker = CredentialBroker()
    # Egress has fetched the pay key once before (for a request to its own host).
    primed = Destination("pay.example.com", 443, "GET", "/v1/x")
    assert isinstance(await broker.prepare(cache, policy.skills["s"], decide(policy, "s", primed).rule,
                                           primed, [], "/v1/x", verified_tls=True), Injected)
    dest = Destination(host, 443, "GET", path.split("?")[0])
    decision = decide(policy, "s", dest)
    assert decision.allowed
    outcome = await broker.prepare(cache, policy.skills["s"], decision.rule, dest, headers, path,
                                   verified_tls=tls)
    if expected is None:
        assert outcome is None
    elif isinstance(expected, Reason):
        assert isinstance(outcome, Problem) and outcome.reason is expected
        assert REAL_PAY not in outcome.detail and PAY not in outcome.detail
    else:
        assert isinstance(outcome, Injected) and outcome.credential == expected
        assert not any(PAY in v or MAIL in v for _, v in outcome.fields)
