"""The gate without mitmproxy: plain Arrivals in, Admitted or Refused out, with the fakes of
tests/fakes.py for DNS, secrets and time. Every refusal reason the gate can return has a row."""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass, field

import pytest

from egress.errors import ResolveError
from egress.netguard import AddressGuard
from egress.ops.metrics import Metrics, Snapshot
from egress.ops.ratelimit import RateLimiter
from egress.policy.addresses import NetworkPolicy
from egress.policy.decide import Decision, Verdict
from egress.policy.load import load_policy_texts
from egress.policy.model import PolicySet
from egress.policy.secret_settings import CacheSettings
from egress.proxy.gate import Admitted, Arrival, Gate, Refused
from egress.proxy.requestcheck import RequestHead
from egress.proxy.tunnels import Tunnel
from egress.reasons import Reason
from egress.secrets import SecretCache
from tests.fakes import FakeClock, FakeResolver, FakeSecretBackend

POLICY = """
skills:
  s:
    allow:
      - host: api.example.com                 # passthrough: host and port only
      - host: plain.example.com
        ports: [80]
      - host: pay.example.com                 # intercepted: the key goes only here
        methods: [GET]
        paths: ["/v1/*"]
        credential: key
      - host: private.example.com
      - host: gone.example.com
    credentials:
      key: {secret: "env:KEY", placeholder: "ph_key_0000000000000000"}
  slow:
    limits: {requests_per_minute: 1}
    allow:
      - host: api.example.com
  watched:
    mode: report
    limits: {requests_per_minute: 1}
    allow:
      - host: api.example.com
"""
PUBLIC = ipaddress.ip_address("93.184.216.34")
PLACEHOLDER = "ph_key_0000000000000000"


@dataclass
class Tokens:
    tokens: dict[str, str] = field(default_factory=lambda: {
        "s": "tok-s", "slow": "tok-slow", "watched": "tok-watched"})

    def verify(self, skill: str, token: str) -> bool:
        return self.tokens.get(skill) == token


@dataclass
class State:
    policy: PolicySet
    tokens: Tokens
    guard: AddressGuard
    secrets: SecretCache


@dataclass
class World:
    gate: Gate
    state: State
    backend: FakeSecretBackend
    resolver: FakeResolver
    metrics: Metrics


def world(*, backend: FakeSecretBackend | None = None, clock: FakeClock | None = None) -> World:
    backend = backend or FakeSecretBackend({"KEY": "sk_live_real_key_value"})
    resolver = FakeResolver({
        "api.example.com": (PUBLIC,), "plain.example.com": (PUBLIC,),
        "pay.example.com": (PUBLIC,), "private.example.com": (ipaddress.ip_address("10.0.0.7"),),
        "gone.example.com": ResolveError("gone.example.com", "NXDOMAIN")})
    clock = clock or FakeClock()
    state = State(load_policy_texts([("p.yaml", POLICY)]), Tokens(),
                  AddressGuard(resolver, NetworkPolicy(), clock=clock),
                  SecretCache({"env": backend}, CacheSettings(), clock=clock))
    metrics = Metrics()
    gate = Gate(lambda: state, RateLimiter(clock), metrics, clock=clock)
    return World(gate, state, backend, resolver, metrics)


def basic(skill: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{skill}:{token}".encode()).decode()


def connect(host: str = "api.example.com", port: int = 443, *, auth: str | None = None,
            skill: str = "s") -> Arrival:
    return Arrival("connect", ("conn", skill), "127.0.0.1:5000", host, port,
                   proxy_authorization=auth if auth is not None else basic(skill, f"tok-{skill}"))


def head(method: str = "GET", target: str = "/v1/x", *, host: str | None = "pay.example.com",
         authority: str = "", fields: tuple[tuple[bytes, bytes], ...] = (),
         http2: bool = False) -> RequestHead:
    hosts = (host,) if host is not None else ()
    return RequestHead(method, target.encode(), authority, hosts,
                       tuple((b"Host", h.encode()) for h in hosts) + fields, http2)


def plain(host: str = "plain.example.com", port: int = 80, method: str = "GET",
          target: str = "/x", *, host_header: str | None = "plain.example.com",
          headers: tuple[tuple[str, str], ...] = (), auth: str | None = None,
          fields: tuple[tuple[bytes, bytes], ...] = ()) -> Arrival:
    return Arrival("http", "conn-plain", "127.0.0.1:5001", host, port,
                   proxy_authorization=auth if auth is not None else basic("s", "tok-s"),
                   head=head(method, target, host=host_header, fields=fields), scheme="http",
                   path=target, headers=headers)


def tunnelled(method: str = "GET", target: str = "/v1/x", *, host: str = "pay.example.com",
              host_header: str | None = None, headers: tuple[tuple[str, str], ...] = (),
              verified_tls: bool = True, refused: Reason | None = None,
              authority: str = "", fields: tuple[tuple[bytes, bytes], ...] = ()) -> Arrival:
    tunnel = Tunnel("s", host, 443, Decision(Verdict.ALLOW, Reason.ALLOWED, intercept=True),
                    str(PUBLIC), refused)
    return Arrival("tunnelled", "conn-tunnel", "127.0.0.1:5002", host, 443,
                   head=head(method, target, host=host_header or host, authority=authority,
                             fields=fields),
                   scheme="https", path=target, headers=headers, tunnel=tunnel,
                   verified_tls=verified_tls)


# -- admitted ------------------------------------------------------------------------------

async def test_connect_is_admitted_with_the_vetted_address_and_the_rule() -> None:
    w = world()
    outcome = await w.gate.admit(connect())
    assert isinstance(outcome, Admitted)
    assert (outcome.skill, outcome.dest.host, outcome.dest.port, outcome.address) == (
        "s", "api.example.com", 443, PUBLIC)
    assert outcome.decision.rule is not None and outcome.decision.rule.host == "api.example.com"
    assert not outcome.decision.intercept
    assert w.state.guard.was_vetted(PUBLIC, 443)  # server_connect's last line will pass


async def test_connect_to_an_intercepted_host_says_so() -> None:
    outcome = await world().gate.admit(connect("pay.example.com"))
    assert isinstance(outcome, Admitted) and outcome.decision.intercept


async def test_the_key_is_injected_into_a_request_to_its_host() -> None:
    w = world()
    outcome = await w.gate.admit(tunnelled(headers=(("Authorization", f"Bearer {PLACEHOLDER}"),)))
    assert isinstance(outcome, Admitted) and outcome.credential is not None
    assert ("Authorization", "Bearer sk_live_real_key_value") in outcome.credential.fields
    assert ("Accept-Encoding", "identity") in outcome.credential.fields
    assert outcome.address is None  # inside a tunnel: its CONNECT pinned the address


async def test_plain_http_without_host_gets_the_judged_one() -> None:
    outcome = await world().gate.admit(plain(host_header=None))
    assert isinstance(outcome, Admitted) and outcome.host_header == "plain.example.com"
    assert outcome.address == PUBLIC


async def test_a_keep_alive_request_uses_the_connections_skill() -> None:
    arrival = plain()
    keep_alive = Arrival(**{**arrival.__dict__, "proxy_authorization": None,
                            "authenticated_as": "s"})
    assert isinstance(await world().gate.admit(keep_alive), Admitted)


async def test_report_mode_lets_an_excess_through_as_report() -> None:
    w = world()
    first = await w.gate.admit(connect(skill="watched"))
    second = await w.gate.admit(connect(skill="watched"))
    assert isinstance(first, Admitted) and first.decision.verdict is Verdict.ALLOW
    assert isinstance(second, Admitted)
    assert (second.decision.verdict, second.decision.reason) == (Verdict.REPORT,
                                                                 Reason.RATE_LIMITED)


async def test_the_gate_reports_its_time_and_counts_lookups() -> None:
    w = world()
    outcome = await w.gate.admit(connect())
    assert outcome.elapsed == 0.0  # the fake clock did not move
    assert w.resolver.asked == ["api.example.com"]
    assert "egress_dns_lookups_total 1" in w.metrics.render(Snapshot())


async def test_a_body_must_not_carry_keys_bound_elsewhere() -> None:
    outcome = await world().gate.admit(plain("plain.example.com", method="POST"))
    assert isinstance(outcome, Admitted)
    assert outcome.unbound == {"key": (PLACEHOLDER,)}


# -- refused: one row per reason ------------------------------------------------------------

REFUSALS = [
    pytest.param(connect(auth=""), Reason.AUTH_INVALID, id="an empty Proxy-Authorization"),
    pytest.param(Arrival("connect", "c", None, "api.example.com", 443), Reason.AUTH_REQUIRED,
                 id="no Proxy-Authorization at all"),
    pytest.param(connect(auth="Basic !!!"), Reason.AUTH_INVALID, id="malformed credentials"),
    pytest.param(connect(auth=basic("s", "wrong")), Reason.AUTH_INVALID, id="wrong token"),
    pytest.param(connect(auth=basic("ghost", "tok-ghost")), Reason.AUTH_INVALID,
                 id="unknown skill's token"),
    pytest.param(connect("a..b"), Reason.BAD_REQUEST, id="a host that is no host"),
    pytest.param(connect("evil.example.com"), Reason.HOST_NOT_ALLOWED, id="host not listed"),
    pytest.param(connect(port=8443), Reason.PORT_NOT_ALLOWED, id="port not listed"),
    pytest.param(connect("private.example.com"), Reason.BLOCKED_ADDRESS,
                 id="resolves to a private address"),
    pytest.param(connect("gone.example.com"), Reason.DNS_FAILURE, id="NXDOMAIN"),
    pytest.param(plain(host_header="other.example.com"), Reason.HOST_MISMATCH,
                 id="plain HTTP: Host names another host"),
    pytest.param(plain(fields=((b"X-A", b"a\rb"),)), Reason.BAD_HEADER,
                 id="plain HTTP: bare CR in a header"),
    pytest.param(plain(target="/x#frag"), Reason.BAD_REQUEST_TARGET,
                 id="plain HTTP: a fragment in the target"),
    pytest.param(plain(headers=(("Upgrade", "h2c"),)), Reason.UPGRADE_NOT_ALLOWED,
                 id="plain HTTP: Upgrade h2c"),
    pytest.param(plain(headers=(("Authorization", f"Bearer {PLACEHOLDER}"),)),
                 Reason.CREDENTIAL_EXFILTRATION, id="plain HTTP: a placeholder to another host"),
    pytest.param(tunnelled(host_header="other.example.com"), Reason.HOST_MISMATCH,
                 id="tunnel: Host differs from the CONNECT host"),
    pytest.param(tunnelled("CONNECT"), Reason.NESTED_CONNECT, id="tunnel: CONNECT inside"),
    pytest.param(tunnelled("DELETE"), Reason.METHOD_NOT_ALLOWED, id="tunnel: method not listed"),
    pytest.param(tunnelled(target="/v2/x"), Reason.PATH_NOT_ALLOWED, id="tunnel: path not listed"),
    pytest.param(tunnelled(target="/v1/../admin"), Reason.PATH_NOT_CANONICAL,
                 id="tunnel: dot-dot path"),
    pytest.param(tunnelled(verified_tls=False), Reason.TLS_REQUIRED,
                 id="tunnel: the key would go without verified TLS"),
    pytest.param(tunnelled(refused=Reason.UPSTREAM_TLS_FAILED), Reason.UPSTREAM_TLS_FAILED,
                 id="tunnel: its upstream failed TLS verification"),
]


@pytest.mark.parametrize("arrival, reason", REFUSALS)
async def test_refusals(arrival: Arrival, reason: Reason) -> None:
    w = world()
    outcome = await w.gate.admit(arrival)
    assert isinstance(outcome, Refused), outcome
    assert outcome.reason is reason, outcome.detail


async def test_an_unknown_skill_with_a_valid_token_is_refused() -> None:
    w = world()
    w.state.tokens.tokens["nobody"] = "tok-nobody"
    outcome = await w.gate.admit(connect(skill="nobody"))
    assert isinstance(outcome, Refused) and outcome.reason is Reason.UNKNOWN_SKILL


async def test_no_policy_refuses_everything() -> None:
    gate = Gate(lambda: None, RateLimiter(FakeClock()), Metrics(), clock=FakeClock())
    outcome = await gate.admit(connect())
    assert isinstance(outcome, Refused) and outcome.reason is Reason.NO_POLICY
    assert outcome.status == 503


async def test_rate_limit_refuses_the_second_request_in_a_minute() -> None:
    w = world()
    assert isinstance(await w.gate.admit(connect(skill="slow")), Admitted)
    outcome = await w.gate.admit(connect(skill="slow"))
    assert isinstance(outcome, Refused) and outcome.reason is Reason.RATE_LIMITED
    assert outcome.status == 429


@pytest.mark.parametrize("backend", [
    pytest.param(FakeSecretBackend(broken="down"), id="secret manager down"),
    pytest.param(FakeSecretBackend({}), id="secret not found"),
    pytest.param(FakeSecretBackend(broken="contract"), id="backend breaks its contract"),
])
async def test_a_key_that_cannot_be_fetched_fails_closed(backend: FakeSecretBackend) -> None:
    outcome = await world(backend=backend).gate.admit(tunnelled())
    assert isinstance(outcome, Refused) and outcome.reason is Reason.CREDENTIAL_UNAVAILABLE
    assert outcome.status == 503
    assert "sk_live" not in str(outcome.detail)


async def test_a_gated_fetch_holds_the_request_until_the_secret_arrives() -> None:
    import asyncio

    backend = FakeSecretBackend({"KEY": "sk_live_real_key_value"}, gated=True)
    w = world(backend=backend)
    pending = asyncio.create_task(w.gate.admit(tunnelled()))
    await asyncio.wait_for(backend.started.wait(), 5)
    assert not pending.done()  # deny-before-connect: nothing admitted while the fetch waits
    backend.gate.set()
    assert isinstance(await asyncio.wait_for(pending, 5), Admitted)


async def test_a_denied_request_costs_no_dns_lookup_and_no_secret_fetch() -> None:
    w = world()
    await w.gate.admit(connect("evil.example.com"))
    await w.gate.admit(tunnelled("DELETE"))
    assert w.resolver.asked == [] and w.backend.calls == 0


async def test_refusal_after_the_limiter_counted_is_not_charged_twice() -> None:
    outcome = await world().gate.admit(connect("private.example.com"))
    assert isinstance(outcome, Refused) and outcome.counted
