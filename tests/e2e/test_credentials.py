"""End to end: credential brokering through selective interception, with a real OpenBao.

The skill `payer` holds only a placeholder. egress terminates TLS for api.bound.test (its rule
names a credential), puts the real key from OpenBao into the request, and the echo upstream
shows what arrived. Tests that stop OpenBao run last in this module.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import websockets

from tests.clients import basic, read_response
from tests.conftest import UPSTREAM_IP, TestCA, write_policy
from tests.dnsserver import DnsServer
from tests.openbao import OpenBao, openbao_server
from tests.proxy import Proxy, run_proxy
from tests.upstream import Upstream, run_upstream, upstream_headers

ONE_PATH = ("what is checked happens inside intercepted traffic, mitmproxy's on both"
            " paths (this runs on the fast path, which hands it over)")

PLACEHOLDER = "sk_live_egress_placeholder_0000000000000000"
REAL_KEY = "sk_live_REAL_" + os.urandom(12).hex()
ROTATED_KEY = "sk_live_ROTATED_" + os.urandom(12).hex()
FILE_KEY = "file_key_" + os.urandom(12).hex()
NAMES = ["api.bound.test", "inspect.bound.test", "other.bound.test", "files.bound.test",
         "plain.bound.test"]


@dataclass
class CredWorld:
    proxy: Proxy
    tls: Upstream
    plain: Upstream
    bao: OpenBao
    bundle: str  # egress CA + test CA: what a skill trusts

    def client(self, skill: str = "payer", *, http2: bool = False) -> httpx.Client:
        return httpx.Client(proxy=self.proxy.url(skill), http2=http2, timeout=15,
                            verify=ssl.create_default_context(cafile=self.bundle), trust_env=False)

    def url(self, host: str, path: str) -> str:
        return f"https://{host}:{self.tls.port}{path}"


@pytest.fixture(scope="module")
def cw(proxy_path: str, tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[CredWorld]:
    tmp = tmp_path_factory.mktemp("cred")
    key_file = tmp / "files-key"
    key_file.write_text(FILE_KEY + "\n")
    (tmp / "bao").mkdir()
    with openbao_server(tmp / "bao") as bao, DnsServer() as dns, \
            run_upstream(UPSTREAM_IP, ca=test_ca.ca, names=NAMES, tmp=str(tmp)) as tls, \
            run_upstream(UPSTREAM_IP, ca=None, names=[], tmp=str(tmp)) as plain:
        bao.kv_put("payer", {"api_key": REAL_KEY})
        for name in NAMES:
            dns.set(name, [UPSTREAM_IP], ttl=300)
        policies = tmp / "policies"
        policies.mkdir()
        shutil.copy(test_ca.path, policies / "upstream-ca.pem")
        write_policy(policies, f"""
            settings:
              dns: {{nameservers: ["{dns.address}"], timeout: 2}}
              networks: {{allow: ["{UPSTREAM_IP}/32"]}}
              upstream_ca: upstream-ca.pem
              secrets:
                vault: {{addr: "{bao.addr}", auth: {{token_env: EGRESS_TEST_BAO_TOKEN}}, timeout: 2}}
                cache: {{ttl: 1, jitter: 0, grace: 6}}
            skills:
              payer:
                allow:
                  - host: api.bound.test
                    ports: [{tls.port}]
                    methods: [GET, HEAD]
                    paths: ["/v1/invoices", "/v1/invoices/*", "/ws", "/sse"]
                    credential: stripe
                  - host: inspect.bound.test
                    ports: [{tls.port}]
                    methods: [GET, POST, PUT]
                  - host: other.bound.test
                    ports: [{tls.port}]
                  - host: files.bound.test
                    ports: [{tls.port}]
                    credential: from-file
                  - host: plain.bound.test
                    ports: [{plain.port}]
                  - host: cold.bound.test
                    ports: [{tls.port}]
                    credential: cold
                  - host: wrongcert.test
                    ports: [{tls.port}]
                    credential: stripe
                credentials:
                  stripe:
                    secret: "vault:secret/payer#api_key"
                    placeholder: {PLACEHOLDER}
                  from-file:
                    secret: "file:{key_file}"
                    header: X-Api-Key
                  cold:
                    secret: "vault:secret/never-fetched#api_key"
              other:
                allow:
                  - host: api.bound.test
                    ports: [{tls.port}]
            """)
        dns.set("cold.bound.test", [UPSTREAM_IP], ttl=300)
        dns.set("wrongcert.test", [UPSTREAM_IP], ttl=300)  # the upstream has no cert for it
        with run_proxy(policies, tmp / "data", ["payer", "other"],
                       env={"EGRESS_TEST_BAO_TOKEN": bao.root_token}) as proxy:
            bundle = tmp / "bundle.pem"
            egress_ca = (tmp / "data" / "ca" / "mitmproxy-ca-cert.pem").read_text()
            bundle.write_text(egress_ca + Path(test_ca.path).read_text())
            yield CredWorld(proxy, tls, plain, bao, str(bundle))


def echoed(resp: httpx.Response) -> dict[str, str]:
    """The headers the upstream received (egress redacts the key in the echo itself)."""
    assert resp.status_code == 200, resp.text
    return upstream_headers(resp.json()["seen"])


def tls_request(cw: CredWorld, sni: str, request: bytes, skill: str = "payer") -> bytes:
    """CONNECT to api.bound.test, TLS with `sni`, send a raw request, return the raw answer."""
    target = f"api.bound.test:{cw.tls.port}"
    raw = socket.create_connection((cw.proxy.host, cw.proxy.port), timeout=10)
    raw.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: "
                f"{basic(skill, cw.proxy.tokens[skill])}\r\n\r\n".encode())
    assert read_response(raw).status == 200
    ctx = ssl.create_default_context(cafile=cw.bundle)
    ctx.set_alpn_protocols(["http/1.1"])
    with ctx.wrap_socket(raw, server_hostname=sni) as s:
        s.sendall(request)
        resp = read_response(s)
    return f"{resp.status}".encode() + b" " + resp.body


# -- injection ---------------------------------------------------------------------------

def test_placeholder_is_replaced_on_the_bound_host(cw: CredWorld) -> None:
    with cw.client() as c:
        seen = echoed(c.get(cw.url("api.bound.test", "/v1/invoices"),
                            headers={"Authorization": f"Bearer {PLACEHOLDER}"}))
    assert seen["authorization"] == f"Bearer {REAL_KEY}"


def test_header_is_set_when_the_skill_sends_nothing(cw: CredWorld) -> None:
    with cw.client() as c:
        seen = echoed(c.get(cw.url("api.bound.test", "/v1/invoices/in_123"),
                            headers={"Authorization": "Bearer whatever-the-skill-had"}))
    assert seen["authorization"] == f"Bearer {REAL_KEY}"


def test_file_backend_and_custom_header(cw: CredWorld) -> None:
    with cw.client() as c:
        seen = echoed(c.get(cw.url("files.bound.test", "/echo")))
    assert seen["x-api-key"] == FILE_KEY


def test_not_injected_on_another_allowed_host_of_the_same_skill(cw: CredWorld) -> None:
    with cw.client() as c:
        seen = echoed(c.get(cw.url("inspect.bound.test", "/echo")))
    assert "authorization" not in seen
    assert REAL_KEY not in json.dumps(seen)


def test_not_injected_for_another_skill(cw: CredWorld) -> None:
    with cw.client("other") as c:  # `other` may reach the host: passthrough, nothing added
        seen = echoed(c.get(cw.url("api.bound.test", "/v1/invoices")))
    assert "authorization" not in seen


@pytest.mark.parametrize("host", [
    pytest.param("inspect.bound.test", id="intercepted host without the credential"),
])
def test_placeholder_to_an_unbound_host_is_denied_and_logged(cw: CredWorld, host: str) -> None:
    with cw.client() as c:
        resp = c.get(cw.url(host, "/echo"), headers={"X-Leak": PLACEHOLDER})
    assert resp.status_code == 403
    body = resp.json()
    assert body["reason"] == "credential_exfiltration"
    assert cw.proxy.audit_for(body["request_id"])["reason"] == "credential_exfiltration"


def test_placeholder_over_plain_http_is_never_substituted(cw: CredWorld) -> None:
    with httpx.Client(proxy=cw.proxy.url("payer"), timeout=10, trust_env=False) as c:
        resp = c.get(f"http://plain.bound.test:{cw.plain.port}/echo",
                     headers={"Authorization": f"Bearer {PLACEHOLDER}"})
    assert resp.status_code == 403
    assert resp.json()["reason"] == "credential_exfiltration"


def test_response_header_echo_of_the_secret_is_redacted(cw: CredWorld) -> None:
    with cw.client() as c:
        resp = c.get(cw.url("api.bound.test", "/v1/invoices"),
                     headers={"Authorization": f"Bearer {PLACEHOLDER}", "X-Echo-Back": "authorization"})
    assert echoed(resp)["authorization"] == f"Bearer {REAL_KEY}"  # the upstream got the key
    assert resp.headers["x-echoed"] == "Bearer [redacted-by-egress]"  # the skill never sees it
    assert REAL_KEY not in resp.text  # nor in the body, which echoes every header
    assert REAL_KEY not in cw.proxy.audit_path.read_text()


def test_no_credential_to_an_upstream_whose_certificate_does_not_verify(cw: CredWorld) -> None:
    # wrongcert.test resolves to the echo upstream, whose certificate does not name it:
    # mitmproxy's upstream verification fails, so the key is never sent.
    with cw.client() as c:
        resp = c.get(cw.url("wrongcert.test", "/v1/invoices"),
                     headers={"Authorization": f"Bearer {PLACEHOLDER}"})
    assert resp.status_code == 502
    assert REAL_KEY not in resp.text and ROTATED_KEY not in resp.text


# -- rules inside an intercepted tunnel ----------------------------------------------------

def test_get_allowed_post_denied_on_a_read_only_rule(cw: CredWorld) -> None:
    with cw.client() as c:
        assert c.get(cw.url("api.bound.test", "/v1/invoices")).status_code == 200
        resp = c.post(cw.url("api.bound.test", "/v1/invoices"), content=b"{}")
    assert resp.status_code == 403
    assert resp.json()["reason"] == "method_not_allowed"


# Spellings with more than one reading are refused as such (path_not_canonical), never
# resolved: tests/adversarial/test_path_spelling.py has the full table.
@pytest.mark.parametrize("path, reason", [
    pytest.param("/v1/invoices/../charges", "path_not_canonical",
                 id="dot-dot climbs out of the allowed prefix"),
    pytest.param("/v1/invoices/%2e%2e/charges", "path_not_canonical", id="percent-encoded dot-dot"),
    pytest.param("/v1/invoices%2f..%2fcharges", "path_not_canonical", id="encoded slash"),
    pytest.param("/v1/invoices/%252e%252e/charges", "path_not_canonical",
                 id="double percent-encoding"),
    pytest.param("/v1/charges", "path_not_allowed", id="plainly outside the rule"),
    pytest.param("/v1/invoices\\..\\charges", "path_not_canonical", id="backslashes"),
])
def test_path_tricks_are_denied(cw: CredWorld, path: str, reason: str) -> None:
    answer = tls_request(cw, "api.bound.test", (
        f"GET {path} HTTP/1.1\r\nHost: api.bound.test:{cw.tls.port}\r\n"
        f"Authorization: Bearer {PLACEHOLDER}\r\nConnection: close\r\n\r\n").encode())
    assert answer.startswith(b"403"), answer[:200]
    assert f'"reason": "{reason}"'.encode() in answer


def test_host_header_must_match_connect_host_inside_tunnel(cw: CredWorld) -> None:
    answer = tls_request(cw, "api.bound.test", (
        f"GET /v1/invoices HTTP/1.1\r\nHost: inspect.bound.test:{cw.tls.port}\r\n"
        "Connection: close\r\n\r\n").encode())
    assert answer.startswith(b"403")
    assert b"host_mismatch" in answer


def test_sni_mismatch_on_an_intercepted_host_is_refused(cw: CredWorld) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        tls_request(cw, "inspect.bound.test", b"GET /v1/invoices HTTP/1.1\r\nHost: x\r\n\r\n")


# -- protocols through interception -----------------------------------------------------

def test_http2_through_interception_injects(cw: CredWorld) -> None:
    # curl offers h2 first (httpx offers http/1.1 first, and mitmproxy honours the client's
    # preference), so curl is the client that proves HTTP/2 end to end here.
    out = subprocess.run(
        ["curl", "-sS", "--http2", "--proxy", cw.proxy.url("payer"), "--cacert", cw.bundle,
         "-H", f"Authorization: Bearer {PLACEHOLDER}", "-w", "\n%{http_version}",
         cw.url("api.bound.test", "/v1/invoices")],
        capture_output=True, text=True, timeout=30, env={"PATH": os.environ["PATH"]})
    body, _, version = out.stdout.rpartition("\n")
    assert version == "2", out.stderr
    data = json.loads(body)
    assert data["http_version"] == "2"
    assert upstream_headers(data["seen"])["authorization"] == f"Bearer {REAL_KEY}"
    assert REAL_KEY not in body  # the echo reached curl redacted


def test_websocket_upgrade_carries_the_credential(cw: CredWorld) -> None:
    async def talk() -> tuple[str, str]:
        ctx = ssl.create_default_context(cafile=cw.bundle)
        async with websockets.connect(f"wss://api.bound.test:{cw.tls.port}/ws", ssl=ctx,
                                      proxy=cw.proxy.url("payer"), open_timeout=10,
                                      additional_headers={"Authorization": f"Bearer {PLACEHOLDER}"}) as ws:
            first = json.loads(await ws.recv())
            await ws.send("hello")
            assert REAL_KEY not in first["headers"]["authorization"]  # redacted in the message
            return upstream_headers(first["seen"])["authorization"], str(await ws.recv())

    auth, echo = asyncio.run(talk())
    assert auth == f"Bearer {REAL_KEY}"
    assert echo == "hello"


def test_sse_first_event_arrives_long_before_the_stream_ends(cw: CredWorld) -> None:
    with cw.client() as c:
        start = time.monotonic()
        with c.stream("GET", cw.url("api.bound.test", "/sse?n=4&gap=1.5")) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            first = next(line for line in lines if line)
            first_at = time.monotonic() - start
            for _ in lines:
                pass
            total = time.monotonic() - start
    assert first == "data: event 0"
    # The stream lasts >= 4.5 s; a buffered response would deliver the first event at the end.
    assert total >= 4.5 and first_at < total - 3


def test_large_upload_and_download_stream_through_interception(cw: CredWorld) -> None:
    size = 50 * 1024 * 1024
    rss_before = _rss_kib(cw.proxy.process.pid)

    def chunks() -> Iterator[bytes]:
        block = b"u" * (1 << 20)
        for _ in range(size // len(block)):
            yield block

    with cw.client() as c:
        up = c.put(cw.url("inspect.bound.test", "/upload"), content=chunks())
        assert up.status_code == 200 and up.json()["body_length"] == size
        got = 0
        with c.stream("GET", cw.url("inspect.bound.test", f"/bytes?n={size}")) as resp:
            assert resp.headers["content-length"] == str(size)
            for part in resp.iter_bytes():
                got += len(part)
    assert got == size
    # Generous bound (the real figure is in bench/): buffering either body would add >= 50 MiB.
    assert _rss_kib(cw.proxy.process.pid) - rss_before < 40 * 1024


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# -- secret manager failures (these stop OpenBao: keep them last) ------------------------

def test_rotation_reaches_requests_within_the_ttl(cw: CredWorld) -> None:
    cw.bao.kv_put("payer", {"api_key": ROTATED_KEY})
    deadline = time.monotonic() + 10
    seen = ""
    with cw.client() as c:
        while time.monotonic() < deadline:
            seen = echoed(c.get(cw.url("api.bound.test", "/v1/invoices")))["authorization"]
            if seen == f"Bearer {ROTATED_KEY}":
                break
            time.sleep(0.3)
    assert seen == f"Bearer {ROTATED_KEY}"


def test_backend_down_uses_stale_value_within_grace_then_fails_closed(cw: CredWorld) -> None:
    with cw.client() as c:
        echoed(c.get(cw.url("api.bound.test", "/v1/invoices")))  # fresh value cached
        cw.bao.kill()
        time.sleep(1.2)  # past the 1 s TTL, inside the 6 s grace window
        resp = c.get(cw.url("api.bound.test", "/v1/invoices"))
        assert echoed(resp)["authorization"] == f"Bearer {ROTATED_KEY}"
        stale = [r for r in cw.proxy.audit() if "stale credential" in (r.get("detail") or "")]
        assert stale and stale[-1]["credential"] == "stripe"

        # Cold start: a credential never fetched while the backend is down -> 503.
        cold = c.get(cw.url("cold.bound.test", "/echo"))
        assert cold.status_code == 503
        assert cold.json()["reason"] == "credential_unavailable"

        deadline = time.monotonic() + 15
        status = 200
        while time.monotonic() < deadline and status == 200:
            status = c.get(cw.url("api.bound.test", "/v1/invoices")).status_code
            time.sleep(0.5)
        assert status == 503
    reasons = [r["reason"] for r in cw.proxy.audit()]
    assert "credential_unavailable" in reasons


def test_no_secret_value_in_any_log_or_audit_file(cw: CredWorld) -> None:
    texts = [cw.proxy.audit_path.read_text(), cw.proxy.log()]
    for path in cw.proxy.data_dir.rglob("*"):
        if path.is_file() and path.suffix in (".jsonl", ".log", ".json"):
            texts.append(path.read_text(errors="replace"))
    for secret in (REAL_KEY, ROTATED_KEY, FILE_KEY):
        assert not any(secret in t for t in texts)
