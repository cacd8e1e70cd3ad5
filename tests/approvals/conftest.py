"""A running egress with approval rules, a real upstream that records what it received, a
webhook receiver, and the CLI: the world the approval tests share (one per module).

    payer      POST/GET api.pay.test /v1/refunds, /v1/charges[/*] with credential `stripe`
               (env, placeholder), approval {wait: 15, valid_for: 600}: held while a person
               decides; a second credential `mail` bound to mail.pay.test
    quick      the same rule with approval {wait: 0}: 428 at once, decided later; and
               h2.pay.test (an HTTP/2 upstream) with the credential and approval {wait: 0}
    reporter   mode: report, approval {wait: 8}: never held, recorded would_need_approval
    flood      approval {wait: 0} on api.pay.test, for the open-approval cap (max_pending: 8)
    brief      approval {wait: 0, valid_for: 10} on api.pay.test: approvals that expire

settings.approvals: max_body 4KiB, max_pending 8, the webhook read from a file at each
notification (`webhook_to()` points it at the live receiver or at a listener that never
answers), notify timeout 30s. No admin token is configured: egress generates one for its run
(DATA_DIR/admin.json), which the CLI reads.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.conftest import UPSTREAM_IP, TestCA, write_policy
from tests.dnsserver import DnsServer
from tests.parts.apiserver import ApiServer, serve_api
from tests.proxy import Proxy, run_proxy
from tests.upstream import Upstream, free_port, run_upstream

REAL_KEY = "sk_live_REAL_" + os.urandom(12).hex()
MAIL_KEY = "mail_REAL_" + os.urandom(12).hex()
PLACEHOLDER = "sk_live_egress_placeholder_approvals_0000"
MAIL_PLACEHOLDER = "mail_egress_placeholder_approvals_0000"
EGRESS = str(Path(sys.executable).with_name("egress"))
SKILLS = ["payer", "quick", "reporter", "flood", "brief"]


class SilentListener:
    """Accepts connections and never answers (a webhook that hangs); holds them until close."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.held: list[socket.socket] = []
        self._running = True
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while self._running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.held.append(conn)

    def close(self) -> None:
        self._running = False
        self._thread.join(5)
        for conn in self.held:
            conn.close()
        self.sock.close()


@dataclass
class ApprovalWorld:
    proxy: Proxy
    upstream: ApiServer
    hooks: ApiServer
    silent: SilentListener
    bundle: str  # egress CA + test CA
    webhook_file: Path
    h2: Upstream  # HTTP/2 (hypercorn echo: headers and body length)

    @property
    def data_dir(self) -> Path:
        return self.proxy.data_dir

    def admin_record(self) -> dict[str, Any]:
        return json.loads((self.data_dir / "admin.json").read_text())

    @property
    def admin_url(self) -> str:
        return str(self.admin_record()["url"])

    @property
    def token(self) -> str:
        return str(self.admin_record()["token"])

    def client(self, skill: str = "payer", *, http2: bool = False,
               timeout: float = 30) -> httpx.Client:
        return httpx.Client(proxy=self.proxy.url(skill), http2=http2, timeout=timeout,
                            verify=ssl.create_default_context(cafile=self.bundle),
                            trust_env=False)

    def url(self, path: str, host: str = "api.pay.test") -> str:
        return f"https://{host}:{self.upstream.port}{path}"

    def api(self, method: str, path: str, *, json_body: Any = None,
            token: str | None | bool = True, headers: dict[str, str] | None = None
            ) -> httpx.Response:
        """Call the admin endpoint's API (token=True: the run's generated token)."""
        sent = dict(headers or {})
        bearer = self.token if token is True else token or None
        if bearer:
            sent["Authorization"] = f"Bearer {bearer}"
        with httpx.Client(timeout=10, trust_env=False) as c:
            return c.request(method, self.admin_url + path, json=json_body, headers=sent)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "EGRESS_ADMIN_TOKEN"}
        done = subprocess.run([EGRESS, *args, "--data-dir", str(self.data_dir)],
                              capture_output=True, text=True, timeout=30, env=env)
        if check:
            assert done.returncode == 0, done.stderr
        return done

    def pending(self, skill: str | None = None) -> list[dict[str, Any]]:
        approvals = self.api("GET", "/api/approvals").json()["approvals"]
        return [a for a in approvals if skill is None or a["skill"] == skill]

    def wait_pending(self, check: Callable[[dict[str, Any]], bool], timeout: float = 10
                     ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for a in self.pending():
                if check(a):
                    return a
            time.sleep(0.05)
        raise AssertionError("no such pending approval")

    def received(self, path: str) -> list[Any]:
        return self.upstream.requests_to(path)

    def audit(self, **fields: Any) -> list[dict[str, Any]]:
        return [r for r in self.proxy.audit() if all(r.get(k) == v for k, v in fields.items())]

    def webhook_to(self, url: str) -> None:
        self.webhook_file.write_text(url + "\n")


def policy(dns: DnsServer, upstream: ApiServer, webhook_file: Path, h2_port: int = 1) -> str:
    port = upstream.port
    rule = (f"host: api.pay.test\n"
            f"                ports: [{port}]\n"
            f"                methods: [POST, GET]\n"
            f"                paths: [\"/v1/refunds\", \"/v1/charges\", \"/v1/charges/*\"]\n"
            f"                credential: stripe")

    def creds(skill: str) -> str:
        mine = PLACEHOLDER if skill == "payer" else f"sk_live_egress_placeholder_{skill}_0000"
        mail = MAIL_PLACEHOLDER if skill == "payer" else f"mail_egress_placeholder_{skill}_0000"
        return (f"credentials:\n"
                f"              stripe:\n"
                f"                secret: \"env:APPROVAL_TEST_KEY\"\n"
                f"                placeholder: {mine}\n"
                f"              mail:\n"
                f"                secret: \"env:APPROVAL_TEST_MAIL_KEY\"\n"
                f"                placeholder: {mail}")

    return f"""
        settings:
          dns: {{nameservers: ["{dns.address}"], timeout: 2}}
          networks: {{allow: ["{UPSTREAM_IP}/32"]}}
          upstream_ca: upstream-ca.pem
          approvals:
            max_body: 4KiB
            max_pending: 8
            notify: {{webhook: "file:{webhook_file}", timeout: 30s}}
        skills:
          payer:
            allow:
              - {rule}
                approval: {{wait: 15, valid_for: 600}}
              - host: mail.pay.test
                ports: [{port}]
                credential: mail
            {creds("payer")}
          quick:
            allow:
              - {rule}
                approval: {{wait: 0, valid_for: 600}}
              - host: h2.pay.test
                ports: [{h2_port}]
                credential: stripe
                approval: {{wait: 0}}
            {creds("quick")}
          reporter:
            mode: report
            allow:
              - {rule}
                approval: {{wait: 8}}
            {creds("reporter")}
          flood:
            allow:
              - host: api.pay.test
                ports: [{port}]
                approval: {{wait: 0}}
          brief:
            allow:
              - host: api.pay.test
                ports: [{port}]
                methods: [POST]
                approval: {{wait: 0, valid_for: 10}}
        """


def upstream_app() -> web.Application:
    app = web.Application()

    async def anything(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "path": request.path})

    app.router.add_route("*", "/{tail:.*}", anything)
    return app


def hooks_app() -> web.Application:
    app = web.Application()

    async def hook(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_post("/hook", hook)
    return app


@pytest.fixture(scope="module")
def aw(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[ApprovalWorld]:
    tmp = tmp_path_factory.mktemp("approvals")
    silent = SilentListener()
    try:
        with DnsServer() as dns, \
                serve_api(upstream_app(), ca=test_ca.ca,
                          names=["api.pay.test", "mail.pay.test"]) as upstream, \
                serve_api(hooks_app(), ca=None, host="127.0.0.1") as hooks, \
                run_upstream(UPSTREAM_IP, ca=test_ca.ca, names=["h2.pay.test"],
                             tmp=str(tmp)) as h2:
            for name in ("api.pay.test", "mail.pay.test", "h2.pay.test"):
                dns.set(name, [UPSTREAM_IP], ttl=300)
            policies = tmp / "policies"
            policies.mkdir()
            shutil.copy(test_ca.path, policies / "upstream-ca.pem")
            webhook_file = tmp / "webhook-url"
            webhook_file.write_text(f"{hooks.url}/hook\n")
            write_policy(policies, policy(dns, upstream, webhook_file, h2.port))
            env = {"APPROVAL_TEST_KEY": REAL_KEY, "APPROVAL_TEST_MAIL_KEY": MAIL_KEY,
                   "EGRESS_ADMIN_TOKEN": ""}
            with run_proxy(policies, tmp / "data", SKILLS, env=env,
                           args=["--admin", f"127.0.0.1:{free_port()}"]) as proxy:
                wait_for_file(tmp / "data" / "admin.json", proxy)
                bundle = tmp / "bundle.pem"
                egress_ca = (tmp / "data" / "ca" / "mitmproxy-ca-cert.pem").read_text()
                bundle.write_text(egress_ca + Path(test_ca.path).read_text())
                yield ApprovalWorld(proxy, upstream, hooks, silent, str(bundle), webhook_file,
                                    h2)
    finally:
        silent.close()


def wait_for_file(path: Path, proxy: Proxy, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return
        assert proxy.alive(), proxy.log()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared:\n{proxy.log()}")


class Background:
    """Run a blocking call (a held request) in a thread; `result()` waits for it (bounded)."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self._result = call()
        except BaseException as exc:  # handed to the test's thread
            self._error = exc

    def result(self, timeout: float = 30) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the request did not finish"
        if self._error is not None:
            raise self._error
        return self._result
