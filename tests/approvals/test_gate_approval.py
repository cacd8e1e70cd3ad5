"""The gate's part in approvals: an enforce-mode request an approval rule allows comes out
Admitted with `approval` set (the front end must hold it); report mode never holds and
records would_need_approval; a CONNECT is never held (it has no request to approve)."""

from __future__ import annotations

from egress.netguard import AddressGuard
from egress.ops.metrics import Metrics
from egress.ops.ratelimit import RateLimiter
from egress.policy.addresses import NetworkPolicy
from egress.policy.decide import Decision, Verdict
from egress.policy.load import load_policy_texts
from egress.policy.model import Approval
from egress.policy.secret_settings import CacheSettings
from egress.proxy.gate import Admitted, Arrival, Gate
from egress.proxy.tunnels import Tunnel
from egress.reasons import Reason
from egress.secrets import SecretCache
from tests.fakes import FakeClock, FakeResolver, FakeSecretBackend
from tests.test_gate import PUBLIC, State, Tokens, basic, head

POLICY = """
skills:
  s:
    allow:
      - host: pay.example.com
        methods: [POST]
        approval: {wait: 7, valid_for: 60}
  watched:
    mode: report
    allow:
      - host: pay.example.com
        methods: [POST]
        approval: true
"""


def gate() -> Gate:
    clock = FakeClock()
    state = State(load_policy_texts([("p.yaml", POLICY)]),
                  Tokens({"s": "tok-s", "watched": "tok-watched"}),
                  AddressGuard(FakeResolver({"pay.example.com": (PUBLIC,)}), NetworkPolicy(),
                               clock=clock),
                  SecretCache({"env": FakeSecretBackend()}, CacheSettings(), clock=clock))
    return Gate(lambda: state, RateLimiter(clock), Metrics(), clock=clock)


def post(skill: str) -> Arrival:
    tunnel = Tunnel(skill, "pay.example.com", 443,
                    Decision(Verdict.ALLOW, Reason.ALLOWED, intercept=True), str(PUBLIC))
    return Arrival("tunnelled", f"conn-{skill}", "127.0.0.1:5002", "pay.example.com", 443,
                   head=head("POST", "/v1/refunds", host="pay.example.com"), scheme="https",
                   path="/v1/refunds", tunnel=tunnel, verified_tls=True)


async def test_an_allowed_request_of_an_approval_rule_must_be_held() -> None:
    outcome = await gate().admit(post("s"))
    assert isinstance(outcome, Admitted)
    assert outcome.approval == Approval(wait=7.0, valid_for=60.0)
    assert outcome.decision.verdict is Verdict.ALLOW


async def test_report_mode_never_holds_and_says_it_would_need_approval() -> None:
    outcome = await gate().admit(post("watched"))
    assert isinstance(outcome, Admitted) and outcome.approval is None
    assert (outcome.decision.verdict, outcome.decision.reason) == (
        Verdict.REPORT, Reason.WOULD_NEED_APPROVAL)


async def test_the_connect_itself_is_not_held() -> None:
    connect = Arrival("connect", "c", "127.0.0.1:5000", "pay.example.com", 443,
                      proxy_authorization=basic("s", "tok-s"))
    outcome = await gate().admit(connect)
    assert isinstance(outcome, Admitted) and outcome.approval is None
    assert outcome.decision.intercept  # an approval rule makes the host intercepted
