"""End to end: inside `egress exec`, egress is the only way out (real namespaces, root).

Every bypass test has a control: the same probe run outside the jail reaches its target, so
a failure inside proves the jail, not a broken test network.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from egress.jail.namespace import command_pid, processes_in
from tests.jail.conftest import JAILED_UID, JailWorld, needs_netns
from tests.jail.netns import snapshot

pytestmark = needs_netns


def outside(world: JailWorld, **action: Any) -> dict[str, Any]:
    """The probe run as the jailed user but in the host namespace, without egress exec."""
    argv = world.probe_argv(**action)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, user=JAILED_UID,
                            group=JAILED_UID, extra_groups=[])
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid: int, seconds: float = 10) -> bool:
    for _ in range(int(seconds / 0.05)):
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


# -- what works ----------------------------------------------------------------------------

def test_allowed_plain_http_goes_through_egress(jail_world: JailWorld) -> None:
    w = jail_world
    answer = w.probe(op="http", url=f"http://upstream.jail.test:{w.plain.port}/hello")
    assert (answer["status"], answer["body"]) == (
        200, {"path": "/hello", "host": f"upstream.jail.test:{w.plain.port}"})


def test_allowed_https_tunnel_works_with_curl(jail_world: JailWorld) -> None:
    w = jail_world
    result = w.run(["curl", "-sS", "--max-time", "10", "--cacert", str(w.public / "test-ca.pem"),
                    f"https://upstream.jail.test:{w.tls.port}/tls"])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["path"] == "/tls"


def test_denied_host_is_refused_with_403_and_audited(jail_world: JailWorld) -> None:
    w = jail_world
    answer = w.probe(op="http", url=f"http://denied.jail.test:{w.plain.port}/x")
    assert answer["status"] == 403
    assert answer["body"]["reason"] == "host_not_allowed"
    record = w.proxy.audit_for(answer["body"]["request_id"])
    assert (record["decision"], record["skill"], record["host"]) == ("deny", "jailed", "denied.jail.test")


def test_denied_https_tunnel_is_refused_at_connect(jail_world: JailWorld) -> None:
    w = jail_world
    before = w.connections()
    result = w.run(["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_connect}",
                    f"https://denied.jail.test:{w.tls.port}/"])
    assert result.stdout == "403"
    assert result.returncode != 0
    assert w.connections() == before


def test_command_sees_proxy_credentials_and_nothing_else(jail_world: JailWorld) -> None:
    w = jail_world
    caller = {"OPERATOR_API_KEY": "sk-operator-secret", "AWS_SECRET_ACCESS_KEY": "aws-secret",
              "NO_PROXY": "*", "LD_PRELOAD": "", "SSH_AUTH_SOCK": "/tmp/agent", "LANG": "C.UTF-8",
              "LC_TIME": "C", "TERM": "dumb", "TZ": "UTC", "SKILL_SETTING": "from-caller"}
    info = w.probe("--env", "SKILL_SETTING", "--env", "MODE=fast", op="info", env=caller)
    url = f"http://jailed:{w.proxy.tokens['jailed']}@127.0.0.1:{w.proxy.port}"
    env = info["env"]
    bundle = env["SSL_CERT_FILE"]
    assert env == {
        "PATH": os.environ["PATH"], "TERM": "dumb", "LANG": "C.UTF-8", "LC_TIME": "C", "TZ": "UTC",
        "HOME": "/nonexistent", "USER": "nobody", "LOGNAME": "nobody",
        "PWD": os.getcwd(),  # the command starts in the caller's directory
        "SKILL_SETTING": "from-caller", "MODE": "fast",
        **dict.fromkeys(["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                         "all_proxy"], url),
        **dict.fromkeys(["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
                         "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "AWS_CA_BUNDLE", "PIP_CERT",
                         "HTTPLIB2_CA_CERTS", "DENO_CERT", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
                         "NIX_SSL_CERT_FILE", "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE"], bundle),
    }
    egress_ca = (w.proxy.data_dir / "ca" / "mitmproxy-ca-cert.pem").read_text().strip()
    assert egress_ca in info["bundle"]
    assert info["bundle"].count("BEGIN CERTIFICATE") > 1  # the system's CAs too
    assert (info["uid"], info["gid"], info["groups"]) == (JAILED_UID, JAILED_UID, [])
    assert (info["no_new_privs"], info["capabilities"]) == ("1", "0" * 16)
    assert info["interfaces"] == ["lo"]
    assert "nameserver" not in info["resolv"]


def test_command_environment_never_reaches_the_root_stages(jail_world: JailWorld) -> None:
    # --env may name LD_PRELOAD or LD_LIBRARY_PATH; in a process that runs as root (egress
    # exec's stages, bwrap) that would load the user's code as root. LD_DEBUG shows which
    # processes the dynamic loader saw the command's environment in: only the command.
    result = jail_world.run(["/bin/true"], "--env", "LD_DEBUG=files")
    assert result.returncode == 0, result.stderr
    loaded_by = {line.split("needed by ")[1].split()[0] for line in result.stderr.splitlines()
                 if "needed by " in line}
    assert loaded_by and all(path.endswith("/true") for path in loaded_by), loaded_by


# -- what does not ---------------------------------------------------------------------------

@pytest.mark.parametrize("action, error", [
    pytest.param({"op": "tcp", "host": "{v4}", "port": "{plain}"}, "ENETUNREACH",
                 id="direct TCP connect to the upstream's IPv4 address"),
    pytest.param({"op": "tcp", "host": "{v6}", "port": "{plain6}"}, "ENETUNREACH",
                 id="direct TCP connect to the upstream's IPv6 address"),
    pytest.param({"op": "http", "url": "http://{v4}:{plain}/", "use_proxy": False}, "ENETUNREACH",
                 id="HTTP client that ignores the proxy variables"),
    pytest.param({"op": "tcp", "host": "{host_v4}", "port": "{proxy}"}, "ENETUNREACH",
                 id="connect to the host's side of a veth"),
])
def test_direct_connections_find_no_route(jail_world: JailWorld, action: dict[str, Any],
                                          error: str) -> None:
    w = jail_world
    action = _fill(w, action)
    if action.get("host") != w.internet.host_v4:
        assert outside(w, **action)["ok"] is True  # control: reachable without the jail
    before = w.connections()
    assert w.probe(**action) == {"ok": False, "error": error}
    assert w.connections() == before


def test_client_ignoring_proxy_cannot_even_resolve_names(jail_world: JailWorld) -> None:
    w = jail_world
    answer = w.probe(op="http", url=f"http://upstream.jail.test:{w.plain.port}/", use_proxy=False)
    assert answer == {"ok": False, "error": "gaierror"}
    assert w.probe(op="resolve", name="upstream.jail.test") == {"ok": False, "error": "gaierror"}


@pytest.mark.parametrize("target, error", [
    pytest.param("dns", "ECONNREFUSED", id="egress's own DNS server address"),
    pytest.param("internet", "ENETUNREACH", id="a resolver in the internet namespace"),
])
def test_udp_dns_query_reaches_no_resolver(jail_world: JailWorld, target: str, error: str) -> None:
    w = jail_world
    name = f"probe-{target}.jail.test"
    host, port = (w.dns.address.rsplit(":", 1)[0], w.dns.port) if target == "dns" else (w.internet.v4, 53)
    if target == "dns":
        assert outside(w, op="udp_dns", host=host, port=port, name=name)["ok"] is True  # control
    before = w.dns.queries[name]
    assert w.probe(op="udp_dns", host=host, port=port, name=name) == {"ok": False, "error": error}
    assert w.dns.queries[name] == before


def test_host_loopback_services_and_egress_admin_are_out_of_reach(jail_world: JailWorld) -> None:
    w = jail_world
    assert outside(w, op="tcp", host="127.0.0.1", port=w.admin_port)["ok"] is True  # control
    for port in (w.admin_port, w.admin.port):
        assert w.probe(op="tcp", host="127.0.0.1", port=port) == {"ok": False, "error": "ECONNREFUSED"}
    assert w.admin.accepted == 0
    # Through the proxy it is refused too: egress never dials its own or loopback addresses.
    via_proxy = w.probe(op="http", url=f"http://127.0.0.1:{w.admin_port}/healthz")
    assert via_proxy["status"] == 403
    record = w.proxy.audit_for(via_proxy["body"]["request_id"])
    assert (record["decision"], record["skill"], record["host"], record["port"]) == (
        "deny", "jailed", "127.0.0.1", w.admin_port)
    assert record["reason"] == via_proxy["body"]["reason"]


# -- exit codes and cleanup ------------------------------------------------------------------

@pytest.mark.parametrize("command, code, stderr", [
    pytest.param(["sh", "-c", "exit 7"], 7, "", id="the command's exit code"),
    pytest.param(["sh", "-c", "kill -TERM $$"], 143, "", id="killed by a signal: 128+N"),
    pytest.param(["no-such-command-egress"], 127, "egress exec: no-such-command-egress: command not found\n",
                 id="command not found"),
])
def test_exit_code_is_the_commands(jail_world: JailWorld, command: list[str], code: int,
                                   stderr: str) -> None:
    result = jail_world.run(command)
    assert (result.returncode, result.stderr) == (code, stderr)


def jail_gone(inode: int, seconds: float = 10) -> bool:
    for _ in range(int(seconds / 0.05)):
        if not processes_in(inode):
            return True
        time.sleep(0.05)
    return False


def test_nothing_is_left_after_the_command_ends(jail_world: JailWorld) -> None:
    w = jail_world
    before = snapshot()
    # A background job, and one that left its session and process group (a daemon).
    result = w.run(["sh", "-c", f"{w.probe_argv(op='info')[0]} {w.public}/probe.py "
                    "'{\"op\": \"info\"}'; sleep 300 & setsid sleep 301 & echo bg=$!"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    inode = int(json.loads(lines[0])["netns"].split("[")[1].rstrip("]"))
    assert lines[-1].startswith("bg=")
    assert jail_gone(inode), "a background process outlived egress exec"
    assert snapshot() == before


def _start(world: JailWorld) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(world.exec_argv(world.probe_argv(op="sleep", seconds=120)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=world.env())
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=30):
            proc.kill()
            proc.wait(10)
            raise AssertionError("the jailed command did not start")
    first = json.loads(proc.stdout.readline())
    inode = int(first["netns"].split("[")[1].rstrip("]"))
    host_pid = command_pid(inode)  # the probe sees itself as PID 2 of the jail
    assert first["pid"] == 2 and host_pid is not None
    return proc, {"pid": host_pid, "inode": inode, "workdir": Path(first["bundle"]).parent}


@pytest.mark.parametrize("how, code", [
    pytest.param("SIGKILL to the command", 137, id="the command is killed"),
    pytest.param("SIGTERM to egress exec", 143, id="SIGTERM to egress exec is forwarded"),
    pytest.param("SIGINT to egress exec", 130, id="SIGINT to egress exec is forwarded"),
    pytest.param("SIGKILL to egress exec", -9, id="egress exec itself is killed"),
])
def test_every_exit_path_cleans_up(jail_world: JailWorld, how: str, code: int) -> None:
    before = snapshot()
    proc, child = _start(jail_world)
    try:
        sig = signal.Signals[how.split()[0]]
        os.kill(child["pid"] if how.endswith("command") else proc.pid, sig)
        assert proc.wait(30) == code
        assert wait_gone(child["pid"]), "the jailed command outlived egress exec"
        assert jail_gone(child["inode"]), "a process of the jail outlived egress exec"
        assert snapshot() == before
        if code == -9:  # no cleanup can run in a SIGKILLed process: the next run does it
            assert jail_world.run(["true"]).returncode == 0
        assert not child["workdir"].exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _fill(world: JailWorld, action: dict[str, Any]) -> dict[str, Any]:
    values = {"v4": world.internet.v4, "v6": world.internet.v6, "host_v4": world.internet.host_v4,
              "plain": world.plain.port, "plain6": world.plain6.port, "proxy": world.proxy.port}
    out: dict[str, Any] = {}
    for key, value in action.items():
        if isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in values:
            out[key] = values[value[1:-1]]
        elif isinstance(value, str):
            out[key] = value.format(**values)
        else:
            out[key] = value
    return out


def test_sigterm_reaches_the_command_itself(jail_world: JailWorld) -> None:
    # The command, not only bwrap: it can clean up (here: its trap runs and picks the status).
    script = 'trap "echo got-term; exit 3" TERM; echo ready; while :; do sleep 0.05; done'
    proc = subprocess.Popen(jail_world.exec_argv(["sh", "-c", script]), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=jail_world.env())
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(timeout=30), "the jailed command did not start"
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 3
        assert proc.stdout.read() == "got-term\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
