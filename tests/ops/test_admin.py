"""The admin endpoint of a real `egress serve`, called with a real HTTP client (httpx)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from egress.errors import ConfigError
from egress.ops.admin import ADMIN_TOKEN_ENV, admin_token, check_admin_bind, is_loopback
from tests.clients import basic
from tests.ops.conftest import (
    ADMIN_TOKEN,
    OpsWorld,
    connect_status,
    get,
    series,
    tunnel,
    wait_until,
)
from tests.proxy import EGRESS
from tests.upstream import free_port


def policy_digest(world: OpsWorld) -> str:
    out = subprocess.run([EGRESS, "check", "--json", str(world.proxy.policies)],
                         capture_output=True, text=True, timeout=30, check=True)
    return str(json.loads(out.stdout)["digest"])


# -- the auth rule ----------------------------------------------------------------------

@pytest.mark.parametrize("method, path", [
    pytest.param("GET", "/healthz", id="healthz"),
    pytest.param("GET", "/readyz", id="readyz"),
    pytest.param("GET", "/metrics", id="metrics"),
    pytest.param("POST", "/reload", id="reload"),
])
@pytest.mark.parametrize("token", [
    pytest.param(None, id="no token"),
    pytest.param("wrong-token-wrong-token-wrong-token", id="wrong token"),
    pytest.param(ADMIN_TOKEN[:-1], id="token missing its last character"),
    pytest.param(ADMIN_TOKEN + "x", id="token with an extra character"),
])
def test_every_endpoint_needs_the_bearer_token(ops: OpsWorld, method: str, path: str,
                                               token: str | None) -> None:
    resp = ops.admin(method, path, token=token)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == 'Bearer realm="egress-admin"'
    assert resp.json() == {"error": "unauthorized",
                           "message": "send Authorization: Bearer <admin token>"}
    assert ADMIN_TOKEN not in resp.text


def test_basic_auth_with_the_right_token_is_not_a_bearer_token(ops: OpsWorld) -> None:
    with httpx.Client(timeout=10, trust_env=False) as client:
        resp = client.get(f"http://127.0.0.1:{ops.admin_port}/healthz",
                          headers={"Authorization": basic("admin", ADMIN_TOKEN)})
    assert resp.status_code == 401


def test_admin_off_loopback_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text("skills: {a: {}}\n")
    port = free_port()
    proc = subprocess.run(
        [EGRESS, "serve", "--policies", str(policies), "--data-dir", str(tmp_path / "data"),
         "--listen", f"127.0.0.1:{port}", "--admin", "0.0.0.0:0"],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, ADMIN_TOKEN_ENV: ""})
    assert proc.returncode == 1
    assert proc.stderr == (
        "egress: --admin 0.0.0.0: not a loopback address, so the admin endpoint needs a token: "
        "set EGRESS_ADMIN_TOKEN or write one to DATA_DIR/admin-token\n")


def test_admin_port_taken_says_what_to_do_and_a_start_says_where_admin_listens(
        tmp_path: Path, ops: OpsWorld) -> None:
    """The first-day papercut: a second `./run serve` finds 8081 taken."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text("skills: {a: {}}\n")
    port = free_port()
    proc = subprocess.run(
        [EGRESS, "serve", "--policies", str(policies), "--data-dir", str(tmp_path / "data"),
         "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{ops.admin_port}"],
        capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert f"egress: --admin 127.0.0.1:{ops.admin_port}: cannot listen (" in proc.stderr
    assert ("another program (or another egress) listens there: give another port with "
            "--admin 127.0.0.1:PORT, or run without the admin endpoint with --admin off"
            ) in proc.stderr
    assert "Traceback" not in proc.stderr
    # The running one said where its admin endpoint is.
    assert f"admin endpoint on http://127.0.0.1:{ops.admin_port}/" in ops.proxy.log()


@pytest.mark.parametrize("host, token, refused", [
    pytest.param("127.0.0.1", None, False, id="loopback without token"),
    pytest.param("::1", None, False, id="IPv6 loopback without token"),
    pytest.param("localhost", None, False, id="localhost without token"),
    pytest.param("127.8.9.10", None, False, id="any 127/8 address is loopback"),
    pytest.param("0.0.0.0", None, True, id="every interface without token"),
    pytest.param("::", None, True, id="every IPv6 interface without token"),
    pytest.param("10.1.2.3", None, True, id="private address without token"),
    pytest.param("admin.example", None, True, id="a name is not known to be loopback"),
    pytest.param("0.0.0.0", "x" * 32, False, id="every interface with a token"),
])
def test_admin_bind_rule(host: str, token: str | None, refused: bool) -> None:
    if refused:
        with pytest.raises(ConfigError, match="not a loopback address"):
            check_admin_bind(host, token)
    else:
        check_admin_bind(host, token)
    assert is_loopback(host) is (host in ("127.0.0.1", "::1", "localhost", "127.8.9.10"))


@pytest.mark.parametrize("env, file, expected", [
    pytest.param({}, None, None, id="none configured"),
    pytest.param({ADMIN_TOKEN_ENV: "e" * 20}, "f" * 20, "e" * 20, id="environment wins over the file"),
    pytest.param({}, "f" * 20 + "\n", "f" * 20, id="file, trailing newline stripped"),
    pytest.param({ADMIN_TOKEN_ENV: "  "}, None, None, id="blank environment value is unset"),
])
def test_admin_token_sources(tmp_path: Path, env: dict[str, str], file: str | None,
                             expected: str | None) -> None:
    if file is not None:
        (tmp_path / "admin-token").write_text(file)
    assert admin_token(tmp_path, env) == expected


def test_short_admin_token_is_refused_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        admin_token(tmp_path, {ADMIN_TOKEN_ENV: "short-secret"})
    assert str(info.value) == ("the admin token is too short: use at least 16 characters, "
                               "e.g. `openssl rand -hex 32`")


# -- endpoints --------------------------------------------------------------------------

def test_healthz(ops: OpsWorld) -> None:
    resp = ops.admin("GET", "/healthz")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["status"] == "ok"
    assert body["policy"] == policy_digest(ops)
    assert body["policy_reload"] == {"ok": True}
    assert body["audit_write_errors"] == 0


def test_readyz(ops: OpsWorld) -> None:
    resp = ops.admin("GET", "/readyz")
    assert resp.status_code == 200
    body = resp.json()
    files = body["checks"].pop("files")  # descriptors open against the limit (test_fdlimit.py)
    assert files["ok"] is True and 0 < files["open"] < files["limit"]
    assert body == {"ready": True, "checks": {
        "policy": {"ok": True, "digest": policy_digest(ops)}, "tokens": {"ok": True}}}


def test_reload_endpoint(ops: OpsWorld) -> None:
    before = ops.metrics()[series("egress_policy_reloads_total", result="ok")]
    resp = ops.admin("POST", "/reload")
    assert resp.status_code == 200
    assert resp.json() == {"ok": True, "policy": policy_digest(ops)}
    assert ops.metrics()[series("egress_policy_reloads_total", result="ok")] == before + 1
    assert "policy reload (admin): ok" in ops.proxy.log()


def test_reload_needs_post(ops: OpsWorld) -> None:
    assert ops.admin("GET", "/reload").status_code == 405


def test_metrics_is_prometheus_text(ops: OpsWorld) -> None:
    resp = ops.admin("GET", "/metrics")
    assert resp.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = resp.text
    for family, kind in [("egress_decisions_total", "counter"),
                         ("egress_auth_failures_total", "counter"),
                         ("egress_dns_lookups_total", "counter"),
                         ("egress_bytes_total", "counter"),
                         ("egress_open_connections", "gauge"),
                         ("egress_decision_seconds", "histogram"),
                         ("egress_policy_reloads_total", "counter"),
                         ("egress_secret_cache_hits_total", "counter")]:
        assert f"# TYPE {family} {kind}\n" in text
    assert f'egress_policy_info{{digest="{policy_digest(ops)}"}} 1\n' in text
    for skill in ops.proxy.tokens:
        assert ops.proxy.tokens[skill] not in text


def test_metrics_values_change_as_requests_are_made(ops: OpsWorld) -> None:
    before = ops.metrics()
    denied = connect_status(ops, "alpha", f"other.test:{ops.tls.port}")
    assert denied.status == 403
    with tunnel(ops, "alpha", "api.allowed.test") as tls:
        assert get(tls, "api.allowed.test").status == 200
        during = ops.metrics()
        assert during[series("egress_open_connections", skill="alpha")] == 1
    # An allowed CONNECT whose client goes away at once.
    assert connect_status(ops, "alpha", f"api.allowed.test:{ops.tls.port}").status == 200
    real = ops.proxy.tokens["alpha"]
    ops.proxy.tokens["alpha"] = "egr_not_the_token"
    try:
        assert connect_status(ops, "alpha", f"api.allowed.test:{ops.tls.port}").status == 407
    finally:
        ops.proxy.tokens["alpha"] = real

    def delta(name: str, **labels: str) -> float:
        key = series(name, **labels)
        return after.get(key, 0.0) - before.get(key, 0.0)

    def settled() -> bool:
        # Byte counts of a connection are complete once egress saw it close.
        nonlocal after
        after = ops.metrics()
        return after.get(series("egress_open_connections", skill="alpha"), 0.0) == 0

    after: dict[str, float] = {}
    wait_until(settled)
    assert after[series("egress_open_connections", skill="alpha")] == 0  # 0, not absent
    assert delta("egress_decisions_total", skill="alpha", decision="deny",
                 reason="host_not_allowed") == 1
    assert delta("egress_decisions_total", skill="alpha", decision="allow", reason="allowed") == 2
    assert delta("egress_denied_hosts_total", skill="alpha", host="other.test") == 1
    assert delta("egress_decisions_total", skill="", decision="deny", reason="auth_invalid") == 1
    assert delta("egress_auth_failures_total", reason="auth_invalid") == 1
    assert delta("egress_dns_lookups_total") == 2
    assert delta("egress_dns_failures_total") == 0
    assert delta("egress_decision_seconds_count", kind="connect") == 4
    assert delta("egress_bytes_total", skill="alpha", direction="out") > 200  # CONNECT + TLS
    assert delta("egress_bytes_total", skill="alpha", direction="in") > 1000  # certificate + body
    # Allowed hosts never become labels: only denials name hosts.
    assert not any('host="api.allowed.test"' in key for key in after)
