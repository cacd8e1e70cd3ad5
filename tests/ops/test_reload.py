"""Hot reload of a running `egress serve`: file edits, invalid edits, SIGHUP, tokens."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from egress.identity import TokenStore
from egress.ops.reload import Reloader, fingerprint
from tests.conftest import TestCA
from tests.ops.conftest import (
    OpsWorld,
    audit_where,
    connect_status,
    get,
    parse_metrics,
    series,
    start_ops_world,
    tunnel,
    wait_until,
)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[OpsWorld]:
    # No admin token: on loopback the endpoint is open, which these tests rely on.
    with start_ops_world(tmp_path_factory.mktemp("reload"), test_ca) as world:
        yield world


@pytest.fixture
def original(live: OpsWorld) -> Iterator[str]:
    """The policy text; restored (and reloaded) after the test."""
    text = live.policy_file.read_text()
    digest = health(live)["policy"]
    yield text
    live.policy_file.write_text(text)
    wait_until(lambda: health(live)["policy"] == digest and health(live)["status"] == "ok")


def health(world: OpsWorld) -> dict[str, object]:
    resp = world.admin("GET", "/healthz", token=False)
    assert resp.status_code == 200
    return dict(resp.json())


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_admin_on_loopback_without_a_configured_token_is_open(live: OpsWorld) -> None:
    assert live.admin("GET", "/readyz", token=False).status_code == 200


def test_edit_allows_a_new_host_while_an_open_tunnel_keeps_working(live: OpsWorld,
                                                                   original: str) -> None:
    old_digest = health(live)["policy"]
    new_target = f"new.test:{live.tls.port}"
    with tunnel(live, "alpha", "api.allowed.test") as tls:
        assert get(tls, "api.allowed.test").status == 200
        assert connect_status(live, "alpha", new_target).status == 403

        marker = "  alpha:\n    allow:\n"
        assert marker in original
        live.policy_file.write_text(original.replace(
            marker, marker + f"      - host: new.test\n        ports: [{live.tls.port}]\n"))
        # Picked up by the watcher (polls every second): a couple of seconds at most.
        wait_until(lambda: connect_status(live, "alpha", new_target).status == 200, timeout=5)

        again = get(tls, "api.allowed.test")  # the tunnel opened before the reload
        assert again.status == 200 and again.json()["path"] == "/echo"

    new_digest = health(live)["policy"]
    assert new_digest != old_digest
    denied = audit_where(live.proxy, skill="alpha", host="new.test", decision="deny")
    allowed = audit_where(live.proxy, skill="alpha", host="new.test", decision="allow")
    assert {r["policy"] for r in denied} == {old_digest}  # each decision names its policy
    assert allowed and {r["policy"] for r in allowed} == {new_digest}
    assert "policy reload (watch): ok" in live.proxy.log()


def test_invalid_edit_keeps_the_running_policy_and_is_reported(live: OpsWorld,
                                                                original: str) -> None:
    digest = health(live)["policy"]
    failed_before = live_metrics(live)[series("egress_policy_reloads_total", result="failed")]
    port_line = f"ports: [{live.tls.port}]"
    broken = original.replace(port_line, "ports: [70000]", 1)
    live.policy_file.write_text(broken)
    line = line_of(broken, "ports: [70000]")
    error = f"{live.policy_file}:{line}: skills.alpha.allow[0].ports[0]: 70000 is outside 1-65535"

    wait_until(lambda: health(live)["status"] == "degraded", timeout=5)
    body = health(live)
    assert body["policy"] == digest
    assert body["policy_reload"] == {"ok": False, "trigger": "watch", "errors": [error]}

    ready = live.admin("GET", "/readyz", token=False)
    assert ready.status_code == 200  # the running policy is still valid
    assert ready.json()["checks"]["policy"]["reload_errors"] == [error]

    metrics = live_metrics(live)
    assert metrics["egress_policy_reload_failing"] == 1
    assert metrics[series("egress_policy_reloads_total", result="failed")] == failed_before + 1
    assert metrics[series("egress_policy_info", digest=str(digest))] == 1
    assert error in live.proxy.log()

    # The old policy still decides.
    assert connect_status(live, "alpha", f"api.allowed.test:{live.tls.port}").status == 200
    resp = live.admin("POST", "/reload", token=False)
    assert resp.status_code == 422
    assert resp.json() == {"ok": False, "policy": digest, "errors": [error]}

    live.policy_file.write_text(original)
    wait_until(lambda: health(live)["status"] == "ok", timeout=5)
    assert live_metrics(live)["egress_policy_reload_failing"] == 0


def test_sighup_reloads(live: OpsWorld) -> None:
    ok_before = live_metrics(live)[series("egress_policy_reloads_total", result="ok")]
    live.proxy.process.send_signal(signal.SIGHUP)
    wait_until(lambda: dict(health(live)["policy_reload"]).get("trigger") == "sighup")  # type: ignore[call-overload]
    assert live_metrics(live)[series("egress_policy_reloads_total", result="ok")] == ok_before + 1
    assert "policy reload (sighup): ok" in live.proxy.log()
    assert live.proxy.alive()


def test_sighup_applies_an_edit(live: OpsWorld, original: str) -> None:
    live.policy_file.write_text(original.replace("  alpha:\n", "  alpha:\n    mode: report\n"))
    live.proxy.process.send_signal(signal.SIGHUP)
    # Whichever comes first, SIGHUP or the watcher: the edit is in force.
    wait_until(lambda: connect_status(live, "alpha", f"other.test:{live.tls.port}").status == 200)


def test_token_changes_are_picked_up_without_a_restart(live: OpsWorld) -> None:
    store = TokenStore(Path(live.proxy.data_dir))
    old = live.proxy.tokens["ghost"]
    new = store.rotate("ghost")
    live.proxy.tokens["ghost"] = new
    try:
        # ghost has a token but no policy: authenticated, then refused as unknown_skill.
        assert connect_status(live, "ghost", f"api.allowed.test:{live.tls.port}").status == 403
        live.proxy.tokens["ghost"] = old
        assert connect_status(live, "ghost", f"api.allowed.test:{live.tls.port}").status == 407
    finally:
        live.proxy.tokens["ghost"] = new
    wait_until(lambda: "tokens changed: tokens.json re-read" in live.proxy.log(), timeout=5)


def live_metrics(world: OpsWorld) -> dict[str, float]:
    resp = world.admin("GET", "/metrics", token=False)
    assert resp.status_code == 200
    return parse_metrics(resp.text)


# -- the watcher's fingerprint, without a proxy -------------------------------------------

def test_fingerprint_sees_policy_files_only(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("skills: {}\n")
    first = fingerprint(tmp_path)
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "a.yaml.swp").write_text("editor swap file, ignored")
    assert fingerprint(tmp_path) == first
    for change in (lambda: (tmp_path / "b.yml").write_text("skills: {}\n"),
                   lambda: (tmp_path / "a.yaml").write_text("skills: {x: {}}\n"),
                   lambda: (tmp_path / "b.yml").unlink()):
        before = fingerprint(tmp_path)
        change()
        assert fingerprint(tmp_path) != before


def test_reloader_without_a_runtime_reports_why(tmp_path: Path) -> None:
    result = asyncio.run(Reloader(lambda: None).reload("admin"))
    assert (result.ok, result.errors) == (False, ("egress has no policy directory loaded",))
