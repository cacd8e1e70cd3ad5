"""End to end: every credential shape and every secret manager, through real clients.

One egress (`egress serve`) with real parts around it: OpenBao, a 1Password Connect server,
Doppler's API, an OAuth 2.0 token server with a protected resource, and a recording TLS
upstream that keeps every byte it receives. The skill `shaper` holds placeholders only.

The module starts with every secret manager and the token endpoint down (a cold start):
each credential then answers 503 with a log line and an audit line naming the backend's
error class, /readyz names each credential not ready, and each recovers once its backend is
up. Then each shape is checked on what the upstream received, and each is sent to a host it
is not bound to, where it must never arrive.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import UPSTREAM_IP, TestCA, write_policy
from tests.dnsserver import DnsServer
from tests.openbao import OpenBao, openbao_server
from tests.ops.conftest import wait_until
from tests.parts.doppler import DopplerApi, doppler_server
from tests.parts.oauth2 import OAuth2Server, oauth2_server
from tests.parts.onepassword import OnePasswordConnect, onepassword_server
from tests.proxy import Proxy, run_proxy
from tests.recording import RecordingUpstream, recording_upstream
from tests.upstream import CountingListener, free_port

ONE_PATH = ("what is checked happens inside intercepted traffic, mitmproxy's on both "
            "paths (tests/proxy.py); the fast path only hands it over")

QUERY_KEY = "owm_REAL_" + os.urandom(10).hex()
QUERY_PH = "owm_placeholder_0000000000000000"
MAIL_KEY = "key-REAL-" + os.urandom(10).hex()
MAIL_PH = "key-placeholder-000000000000000"
OP_KEY = "sk_live_OP_" + os.urandom(10).hex()
DOPPLER_KEY = "sk_live_DOPPLER_" + os.urandom(10).hex()
CLIENT_SECRET = "cs-" + os.urandom(12).hex()
NAMES = ["api.query.test", "api.basic.test", "api.op.test", "api.doppler.test",
         "other.shapes.test"]
ADMIN = free_port()


@dataclass
class Shapes:
    proxy: Proxy
    rec: RecordingUpstream
    bao: OpenBao
    op: OnePasswordConnect
    doppler: DopplerApi
    auth: OAuth2Server
    rotating: OAuth2Server
    dns: DnsServer
    bundle: str
    tmp: Path
    loop: CountingListener
    refresh_token: str = ""

    def client(self, skill: str = "shaper") -> httpx.Client:
        return httpx.Client(proxy=self.proxy.url(skill), timeout=15, trust_env=False,
                            verify=ssl.create_default_context(cafile=self.bundle))

    def url(self, host: str, path: str = "/x") -> str:
        return f"https://{host}:{self.rec.port}{path}"

    def resource(self, path: str, server: OAuth2Server | None = None) -> str:
        return f"{(server or self.auth).url_for('api.oauth.test')}{path}"

    def readyz(self) -> httpx.Response:
        with httpx.Client(trust_env=False, timeout=10) as c:
            return c.get(f"http://127.0.0.1:{ADMIN}/readyz")

    def seed_bao(self) -> None:
        self.bao.kv_put("shaper", {"weather": QUERY_KEY})
        self.bao.kv_put("oauth", {"client_secret": CLIENT_SECRET,
                                  "refresh_token": self.refresh_token})


@pytest.fixture(scope="module")
def sw(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[Shapes]:
    tmp = tmp_path_factory.mktemp("shapes")
    (tmp / "bao").mkdir()
    with openbao_server(tmp / "bao") as bao, DnsServer() as dns, \
            recording_upstream(UPSTREAM_IP, ca=test_ca.ca, names=NAMES) as rec, \
            onepassword_server(test_ca) as op, doppler_server(test_ca) as doppler, \
            oauth2_server(test_ca, expires_in=3600) as auth, \
            oauth2_server(test_ca, expires_in=3600, rotate_refresh_tokens=True) as rotating:
        for name in [*NAMES, "api.oauth.test", "auth.oauth.test"]:
            dns.set(name, [UPSTREAM_IP], ttl=300)
        dns.set("loop-token.test", ["127.0.0.1"], ttl=300)
        op.add_vault("Skills")
        op.add_item("Skills", "Stripe", {"credential": OP_KEY})
        doppler.set_secret("backend", "prd", "STRIPE_KEY", DOPPLER_KEY)
        auth.add_client("shaper-app", CLIENT_SECRET, scope="read write")
        rotating.add_client("shaper-app", CLIENT_SECRET, scope="read")
        loop = CountingListener("127.0.0.1")  # where loop-token.test points: never dialled
        world = Shapes(None, rec, bao, op, doppler, auth, rotating, dns, "", tmp,  # type: ignore[arg-type]
                       loop)
        world.refresh_token = rotating.issue_refresh_token("shaper-app")
        policies = tmp / "policies"
        policies.mkdir()
        shutil.copy(test_ca.path, policies / "upstream-ca.pem")
        token_url = f"{auth.url_for('auth.oauth.test')}/oauth/token"
        rotating_url = f"{rotating.url_for('auth.oauth.test')}/oauth/token"
        write_policy(policies, f"""
            settings:
              dns: {{nameservers: ["{dns.address}"], timeout: 2}}
              networks: {{allow: ["{UPSTREAM_IP}/32"]}}
              upstream_ca: upstream-ca.pem
              secrets:
                vault: {{addr: "{bao.addr}", auth: {{token_env: EGRESS_TEST_BAO_TOKEN}}, timeout: 2}}
                onepassword: {{connect_url: "{op.connect_url}", token_env: EGRESS_TEST_OP_TOKEN,
                               ca_file: "{test_ca.path}", timeout: 2}}
                doppler: {{api_url: "{doppler.api_url}", token_env: EGRESS_TEST_DOPPLER_TOKEN,
                           ca_file: "{test_ca.path}", timeout: 2}}
                cache: {{ttl: 300, jitter: 0, grace: 0}}
            skills:
              shaper:
                allow:
                  - {{host: api.query.test, ports: [{rec.port}], credential: weather}}
                  - {{host: api.basic.test, ports: [{rec.port}], credential: mail}}
                  - {{host: api.op.test, ports: [{rec.port}], credential: op-key}}
                  - {{host: api.doppler.test, ports: [{rec.port}], credential: doppler-key}}
                  - {{host: other.shapes.test, ports: [{rec.port}], methods: [GET, POST]}}
                  - {{host: api.oauth.test, ports: [{auth.server.port}], paths: ["/api/cc/**"],
                     credential: oauth-cc}}
                  - {{host: api.oauth.test, ports: [{rotating.server.port}],
                     paths: ["/api/rt/**"], credential: oauth-rt}}
                  - {{host: api.oauth.test, ports: [{auth.server.port}], paths: ["/api/loop/**"],
                     credential: oauth-loop}}
                credentials:
                  weather:
                    secret: "vault:secret/shaper#weather"
                    query: appid
                    placeholder: {QUERY_PH}
                  mail:
                    secret: env:EGRESS_TEST_MAIL_KEY
                    basic: {{username: api}}
                    placeholder: {MAIL_PH}
                  op-key: {{secret: "op://Skills/Stripe/credential", header: X-Api-Key}}
                  doppler-key: {{secret: "doppler:STRIPE_KEY", header: X-Api-Key}}
                  oauth-cc:
                    oauth2:
                      token_url: "{token_url}"
                      client_id: env:EGRESS_TEST_CLIENT_ID
                      client_secret: "vault:secret/oauth#client_secret"
                      scope: read
                  oauth-rt:
                    oauth2:
                      token_url: "{rotating_url}"
                      client_id: env:EGRESS_TEST_CLIENT_ID
                      client_secret: env:EGRESS_TEST_CLIENT_SECRET
                      refresh_token: "vault:secret/oauth#refresh_token"
                  oauth-loop:
                    oauth2:
                      token_url: "https://loop-token.test:{loop.port}/token"
                      client_id: env:EGRESS_TEST_CLIENT_ID
                      client_secret: env:EGRESS_TEST_CLIENT_SECRET
            """)
        # A cold start with every secret manager and token endpoint down.
        bao.kill()
        for server in (op.server, doppler.server, auth.server, rotating.server):
            server.down()
        env = {"EGRESS_TEST_BAO_TOKEN": bao.root_token,
               "EGRESS_TEST_OP_TOKEN": op.add_token(["Skills"]),
               "EGRESS_TEST_DOPPLER_TOKEN": doppler.add_service_token("backend", "prd"),
               "EGRESS_TEST_MAIL_KEY": MAIL_KEY, "EGRESS_TEST_CLIENT_ID": "shaper-app",
               "EGRESS_TEST_CLIENT_SECRET": CLIENT_SECRET}
        with run_proxy(policies, tmp / "data", ["shaper", "other"], env=env,
                       args=["--admin", f"127.0.0.1:{ADMIN}"]) as proxy:
            world.proxy = proxy
            bundle = tmp / "bundle.pem"
            bundle.write_text((tmp / "data" / "ca" / "mitmproxy-ca-cert.pem").read_text()
                              + Path(test_ca.path).read_text())
            world.bundle = str(bundle)
            try:
                yield world
            finally:
                loop.close()


def received(rec: RecordingUpstream) -> bytes:
    return rec.received()


def sent_to(rec: RecordingUpstream, host: str) -> list[bytes]:
    """Request heads the upstream received for `host` (by SNI)."""
    return [bytes(c.data) for c in rec.connections if c.sni == host]


# -- cold start: every backend down ----------------------------------------------------------

COLD = [
    pytest.param("vault", "api.query.test", "/x?appid=" + QUERY_PH, "weather", id="openbao"),
    pytest.param("op", "api.op.test", "/x", "op-key", id="1password"),
    pytest.param("doppler", "api.doppler.test", "/x", "doppler-key", id="doppler"),
    pytest.param("oauth2", "oauth", "/api/cc/items", "oauth-cc", id="oauth token endpoint"),
]


def test_cold_start_readyz_names_each_credential_that_cannot_be_produced(sw: Shapes) -> None:
    resp = sw.readyz()
    assert resp.status_code == 503
    creds = resp.json()["checks"]["credentials"]
    assert creds["ok"] is False
    status = {name: c["status"] for name, c in creds["credentials"].items()}
    assert status["shaper/mail"] == "ok"  # env: always there
    assert status["shaper/weather"] == "down"
    assert status["shaper/op-key"] == "down" and status["shaper/doppler-key"] == "down"
    assert status["shaper/oauth-cc"] == "down"  # its client secret is in OpenBao
    assert MAIL_KEY not in resp.text and CLIENT_SECRET not in resp.text


@pytest.mark.parametrize("backend, host, path, credential", COLD)
def test_cold_start_backend_down_is_503_logged_audited_then_recovers(
        sw: Shapes, backend: str, host: str, path: str, credential: str) -> None:
    url = sw.resource(path) if host == "oauth" else sw.url(host, path)
    with sw.client() as c:
        resp = c.get(url)
    assert resp.status_code == 503, resp.text
    body = resp.json()
    assert body["reason"] == "credential_unavailable"
    record = sw.proxy.audit_for(body["request_id"])
    assert record["reason"] == "credential_unavailable"
    assert record["detail"].startswith(f"credential {credential}: ")
    assert " down (" in record["detail"]  # the backend's error class
    log = wait_until(lambda: [line for line in sw.proxy.log().splitlines()
                              if f"credential {credential} of skill shaper unavailable" in line])
    assert "down" in log[-1]
    # The backend comes back: the next request goes through, nothing restarted.
    if backend == "vault":
        sw.bao.restart()
        sw.seed_bao()
    elif backend == "op":
        sw.op.server.up()
    elif backend == "doppler":
        sw.doppler.server.up()
    else:
        sw.auth.server.up()
        sw.rotating.server.up()
    with sw.client() as c:
        again = c.get(url)
    assert again.status_code == 200, again.text


def test_readyz_is_ready_once_every_backend_is_back(sw: Shapes) -> None:
    resp = wait_until(lambda: (r := sw.readyz()).status_code == 200 and r)
    creds = resp.json()["checks"]["credentials"]["credentials"]
    assert all(c["ok"] for c in creds.values()), creds
    assert creds["shaper/oauth-loop"]["status"] == "ok"  # its references resolve


# -- each shape, as the upstream received it ------------------------------------------------

def test_query_key_replaces_the_placeholder_value_curl(sw: Shapes) -> None:
    sw.rec.reset()
    out = subprocess.run(
        ["curl", "-sS", "--proxy", sw.proxy.url("shaper"), "--cacert", sw.bundle,
         sw.url("api.query.test", f"/data/2.5/weather?q=Berlin&appid={QUERY_PH}&units=metric")],
        capture_output=True, text=True, timeout=30, env={"PATH": os.environ["PATH"]})
    assert out.returncode == 0, out.stderr
    line = sw.rec.request_lines()[-1]
    assert line == f"GET /data/2.5/weather?q=Berlin&appid={QUERY_KEY}&units=metric HTTP/1.1"
    assert QUERY_PH.encode() not in received(sw.rec)
    assert QUERY_KEY not in out.stdout  # the echo of the request line is redacted


def test_query_key_is_added_when_the_skill_sends_none(sw: Shapes) -> None:
    sw.rec.reset()
    with sw.client() as c:
        assert c.get(sw.url("api.query.test", "/data?q=Paris")).status_code == 200
    assert sw.rec.request_lines()[-1] == f"GET /data?q=Paris&appid={QUERY_KEY} HTTP/1.1"


def test_query_parameter_spelt_with_escapes_is_replaced_too(sw: Shapes) -> None:
    # `app%69d` is `appid` to the server: it must not keep the skill's value next to the key.
    sw.rec.reset()
    with sw.client() as c:
        assert c.get(sw.url("api.query.test", "/d?app%69d=mine&appid=x")).status_code == 200
    assert sw.rec.request_lines()[-1] == f"GET /d?appid={QUERY_KEY} HTTP/1.1"


def test_basic_auth_is_built_from_username_and_key_httpx(sw: Shapes) -> None:
    sw.rec.reset()
    with sw.client() as c:
        resp = c.get(sw.url("api.basic.test", "/v3/domains"), auth=("api", MAIL_PH))
    assert resp.status_code == 200
    expected = base64.b64encode(f"api:{MAIL_KEY}".encode()).decode()
    assert f"Authorization: Basic {expected}".encode() in received(sw.rec)
    assert base64.b64encode(f"api:{MAIL_PH}".encode()) not in received(sw.rec)


@pytest.mark.parametrize("host, key", [
    pytest.param("api.op.test", OP_KEY, id="1password connect"),
    pytest.param("api.doppler.test", DOPPLER_KEY, id="doppler service token"),
])
def test_secret_manager_keys_reach_their_host(sw: Shapes, host: str, key: str) -> None:
    sw.rec.reset()
    with sw.client() as c:
        assert c.get(sw.url(host)).status_code == 200
    assert f"X-Api-Key: {key}".encode() in received(sw.rec)


# -- OAuth 2.0 -------------------------------------------------------------------------------

async def _concurrent(sw: Shapes, url: str, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(proxy=sw.proxy.url("shaper"), timeout=20, trust_env=False,
                                 verify=ssl.create_default_context(cafile=sw.bundle)) as c:
        return list(await asyncio.gather(*(c.get(url) for _ in range(n))))


def test_client_credentials_token_is_minted_once_for_concurrent_requests(sw: Shapes) -> None:
    # The cold-start test minted one already (client credentials): expire it at the server
    # and in egress's eyes (a 401 from the resource drops the cached token).
    before = sw.auth.grants["client_credentials"]
    sw.auth.expire_access_tokens()
    with sw.client() as c:
        assert c.get(sw.resource("/api/cc/one")).status_code == 401
    responses = asyncio.run(_concurrent(sw, sw.resource("/api/cc/items"), 8))
    assert [r.status_code for r in responses] == [200] * 8
    assert sw.auth.grants["client_credentials"] == before + 1
    seen = sw.auth.server.requests_to("/api/cc/items")
    tokens = {r.headers["authorization"] for r in seen[-8:]}
    assert len(tokens) == 1 and sw.auth.is_valid(tokens.pop().removeprefix("Bearer "))
    assert all(r.json()["client_id"] == "shaper-app" for r in responses)


def test_token_near_expiry_is_refreshed_once_under_concurrency(sw: Shapes) -> None:
    sw.auth.set_expires_in(2)  # egress refreshes 10% before: after 1.8 s
    try:
        sw.auth.expire_access_tokens()
        with sw.client() as c:
            c.get(sw.resource("/api/cc/drop"))  # 401: the cached token is dropped
            assert c.get(sw.resource("/api/cc/a")).status_code == 200  # mints a 2 s token
        minted = sw.auth.grants["client_credentials"]
        time.sleep(2.0)  # the token's lifetime: nothing else makes it expire
        responses = asyncio.run(_concurrent(sw, sw.resource("/api/cc/b"), 8))
        assert [r.status_code for r in responses] == [200] * 8
        assert sw.auth.grants["client_credentials"] == minted + 1
    finally:
        sw.auth.set_expires_in(3600)


def test_rotated_refresh_token_is_written_back_to_openbao(sw: Shapes) -> None:
    with sw.client() as c:
        assert c.get(sw.resource("/api/rt/first", sw.rotating)).status_code == 200
    stored = sw.bao.ok("GET", "secret/data/oauth")["data"]["data"]["refresh_token"]
    valid = sw.rotating.valid_refresh_tokens("shaper-app")
    assert valid == [stored] and stored != sw.refresh_token  # rotated, and stored
    # The next mint presents the rotated token (the old one would be invalid_grant now).
    sw.rotating.expire_access_tokens()
    with sw.client() as c:
        assert c.get(sw.resource("/api/rt/drop", sw.rotating)).status_code == 401
        assert c.get(sw.resource("/api/rt/second", sw.rotating)).status_code == 200
    assert sw.rotating.errors["invalid_grant"] == 0
    assert sw.rotating.grants["refresh_token"] >= 2
    assert sw.bao.ok("GET", "secret/data/oauth")["data"]["data"]["refresh_token"] == \
        sw.rotating.valid_refresh_tokens("shaper-app")[0]


def test_token_endpoint_is_vetted_by_the_network_guard(sw: Shapes) -> None:
    # loop-token.test resolves to 127.0.0.1: egress's own call is refused like a skill's.
    with sw.client() as c:
        resp = c.get(sw.resource("/api/loop/x"))
    assert resp.status_code == 503
    record = sw.proxy.audit_for(resp.json()["request_id"])
    assert record["detail"].startswith("credential oauth-loop: oauth2 down")
    assert "refused by the network guard" in sw.proxy.log()
    assert sw.loop.accepted == 0


# -- the key never reaches an unbound host, in any shape -------------------------------------

def _stray(sw: Shapes) -> list[tuple[str, dict[str, str]]]:
    mail_basic = base64.b64encode(f"api:{MAIL_KEY}".encode()).decode()
    ph_basic = base64.b64encode(f"api:{MAIL_PH}".encode()).decode()
    return [
        (f"/x?appid={QUERY_PH}", {}),
        (f"/x?appid={QUERY_KEY}", {}),
        ("/x?k=" + "".join(f"%{b:02X}" for b in QUERY_KEY.encode()), {}),
        ("/x", {"X-Note": base64.b64encode(QUERY_KEY.encode()).decode()}),
        ("/x", {"Authorization": f"Basic {ph_basic}"}),
        ("/x", {"Authorization": f"Basic {mail_basic}"}),
        ("/x", {"X-Api-Key": OP_KEY}),
        (f"/x?token={DOPPLER_KEY.encode().hex()}", {}),
    ]


def test_no_shape_reaches_a_host_it_is_not_bound_to(sw: Shapes) -> None:
    sw.rec.reset()
    with sw.client() as c:
        for path, headers in _stray(sw):
            resp = c.get(sw.url("other.shapes.test", path), headers=headers)
            assert resp.status_code == 403, (path, list(headers))
            assert resp.json()["reason"] == "credential_exfiltration"
            assert sw.proxy.audit_for(resp.json()["request_id"])["reason"] == \
                "credential_exfiltration"
    # (egress connects upstream before answering an intercepted ClientHello, so a
    # connection may be open; no byte of a request went through it)
    assert b"".join(sent_to(sw.rec, "other.shapes.test")) == b""
    data = received(sw.rec)
    for secret in (QUERY_KEY, MAIL_KEY, OP_KEY, DOPPLER_KEY, QUERY_PH):
        assert secret.encode() not in data


def test_minted_token_and_client_secret_never_reach_another_host(sw: Shapes) -> None:
    # The token egress put into the last request to the resource (the one it holds now).
    token = [r for r in sw.auth.server.received
             if r.path.startswith("/api/cc/")][-1].headers["authorization"]
    sw.rec.reset()
    with sw.client() as c:
        for headers in ({"Authorization": token}, {"X-Secret": CLIENT_SECRET}):
            resp = c.post(sw.url("other.shapes.test"), headers=headers)
            assert resp.status_code == 403 and resp.json()["reason"] == "credential_exfiltration"
        # In a body too: the upload is cut before the chunk holding it is forwarded.
        try:
            resp = c.post(sw.url("other.shapes.test"), content=b"x" * 100 + CLIENT_SECRET.encode())
            assert resp.status_code != 200
        except httpx.HTTPError:
            pass
    assert CLIENT_SECRET.encode() not in received(sw.rec)
    assert token.encode() not in received(sw.rec)


def test_keys_travel_only_over_verified_tls(sw: Shapes) -> None:
    # Plain HTTP to a bound host never gets the key (and is refused: tls_required).
    with httpx.Client(proxy=sw.proxy.url("shaper"), trust_env=False, timeout=10) as c:
        resp = c.get(f"http://api.query.test:{sw.rec.port}/x?appid={QUERY_PH}")
    assert resp.status_code == 403
    assert resp.json()["reason"] == "tls_required"
    assert QUERY_KEY.encode() not in received(sw.rec)


def test_audit_and_log_never_hold_a_key(sw: Shapes) -> None:
    text = sw.proxy.audit_path.read_text() + sw.proxy.log()
    for secret in (QUERY_KEY, MAIL_KEY, OP_KEY, DOPPLER_KEY, CLIENT_SECRET, sw.refresh_token):
        assert secret not in text
    assert json.dumps(QUERY_KEY)[1:-1] not in text
