"""What a refused skill receives: status, headers and the agent-readable JSON body."""

from __future__ import annotations

import json

import pytest

from egress.reasons import Reason
from egress.responses import Reply, refusal

BODY_KEYS = ["error", "skill", "host", "port", "reason", "message", "request_id"]
DO_NOT_RETRY = ("Retrying, changing the URL spelling or bypassing the proxy will not help: "
                "ask the operator to change the skill's egress policy if this access is needed.")


def reply_for(reason: Reason, skill: str | None = "stripe") -> Reply:
    return refusal(reason, skill=skill, host="api.example.com", port=443, request_id="rid-1")


def headers(reply: Reply) -> dict[str, str]:
    return dict(reply.headers)


@pytest.mark.parametrize("reason, status", [
    pytest.param(Reason.AUTH_REQUIRED, 407, id="no credentials asks for them"),
    pytest.param(Reason.AUTH_INVALID, 407, id="wrong credentials ask for them"),
    pytest.param(Reason.UNKNOWN_SKILL, 403, id="unknown skill is forbidden"),
    pytest.param(Reason.HOST_NOT_ALLOWED, 403, id="host not allowed is forbidden"),
    pytest.param(Reason.PORT_NOT_ALLOWED, 403, id="port not allowed is forbidden"),
    pytest.param(Reason.METHOD_NOT_ALLOWED, 403, id="method not allowed is forbidden"),
    pytest.param(Reason.PATH_NOT_ALLOWED, 403, id="path not allowed is forbidden"),
    pytest.param(Reason.HOST_MISMATCH, 403, id="host mismatch is forbidden"),
    pytest.param(Reason.BLOCKED_ADDRESS, 403, id="blocked address is forbidden"),
    pytest.param(Reason.CREDENTIAL_EXFILTRATION, 403, id="credential exfiltration is forbidden"),
    pytest.param(Reason.TLS_REQUIRED, 403, id="TLS required is forbidden"),
    pytest.param(Reason.DNS_FAILURE, 502, id="DNS failure is a bad gateway"),
    pytest.param(Reason.UPSTREAM_UNREACHABLE, 502, id="unreachable upstream is a bad gateway"),
    pytest.param(Reason.CREDENTIAL_UNAVAILABLE, 503, id="missing credential is unavailable"),
    pytest.param(Reason.NO_POLICY, 503, id="no policy is unavailable"),
    pytest.param(Reason.RATE_LIMITED, 429, id="rate limited is too many requests"),
    pytest.param(Reason.BAD_REQUEST, 400, id="unparseable request is a bad request"),
])
def test_status_per_reason(reason: Reason, status: int) -> None:
    reply = reply_for(reason)
    assert reply.status == status
    assert ("Proxy-Authenticate" in headers(reply)) is (status == 407)
    assert ("Retry-After" in headers(reply)) is (status == 429)


def test_every_reason_has_a_status_and_a_message() -> None:
    for reason in Reason:
        if reason is Reason.ALLOWED:
            continue
        body = json.loads(reply_for(reason).body)
        assert body["reason"] == reason.value
        assert body["message"].startswith("egress blocked skill 'stripe' from reaching "
                                          "api.example.com:443. ")


def test_407_asks_for_basic_credentials() -> None:
    reply = refusal(Reason.AUTH_REQUIRED, skill=None, host="api.example.com", port=443,
                    request_id="rid-1")
    assert headers(reply)["Proxy-Authenticate"] == 'Basic realm="egress"'
    body = json.loads(reply.body)
    assert body["skill"] is None
    assert body["message"] == (
        "egress blocked an unauthenticated client from reaching api.example.com:443. "
        "The request carried no proxy credentials. "
        "Send the skill's proxy URL (http://SKILL:TOKEN@host:port).")


def test_403_body_is_exactly_the_contract() -> None:
    reply = refusal(Reason.HOST_NOT_ALLOWED, skill="stripe", host="evil.test", port=8443,
                    request_id="0123456789abcdef", policy_source="policies/stripe.yaml:3")
    assert reply.status == 403
    assert reply.body.endswith(b"\n")
    body = json.loads(reply.body)
    assert list(body) == BODY_KEYS
    assert body == {
        "error": "egress_denied",
        "skill": "stripe",
        "host": "evil.test",
        "port": 8443,
        "reason": "host_not_allowed",
        "message": "egress blocked skill 'stripe' from reaching evil.test:8443. "
                   "The skill's egress policy does not list this host. " + DO_NOT_RETRY +
                   " (policy: policies/stripe.yaml:3)",
        "request_id": "0123456789abcdef",
    }
    assert headers(reply) == {
        "Content-Type": "application/json",
        "Cache-Control": "no-store",
        "X-Egress-Reason": "host_not_allowed",
        "X-Egress-Request-Id": "0123456789abcdef",
    }


@pytest.mark.parametrize("reason, message", [
    pytest.param(Reason.DNS_FAILURE,
                 "The host name could not be resolved. "
                 "Check the host name; retrying later may help if DNS is flaky.",
                 id="502 for DNS says retrying may help"),
    pytest.param(Reason.UPSTREAM_UNREACHABLE,
                 "egress could not connect to the destination. "
                 "The destination may be down; retrying later may help.",
                 id="502 for an unreachable upstream says retrying may help"),
    pytest.param(Reason.CREDENTIAL_UNAVAILABLE,
                 "The credential this request needs could not be fetched from the secret manager."
                 " Retrying later may help; the operator has been told.",
                 id="503 for a credential says retrying may help"),
    pytest.param(Reason.RATE_LIMITED,
                 "The skill exceeded its request rate or connection limit. "
                 "Slow down and retry later.", id="429 says to slow down"),
    pytest.param(Reason.PORT_NOT_ALLOWED,
                 "The skill's egress policy lists this host, but not on this port. "
                 + DO_NOT_RETRY, id="403 says retrying will not help"),
])
def test_message_tells_the_agent_what_to_do(reason: Reason, message: str) -> None:
    body = json.loads(reply_for(reason).body)
    assert body["message"] == (
        "egress blocked skill 'stripe' from reaching api.example.com:443. " + message)


def test_429_says_when_to_retry() -> None:
    assert headers(reply_for(Reason.RATE_LIMITED))["Retry-After"] == "60"
