"""`egress exec`: the pure parts (any machine), and the refusals before a jail is built (root)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from egress.cli.exec import (
    Account,
    ca_bundle,
    jail_environment,
    parse_env,
    proxy_url,
    resolve_account,
)
from egress.errors import ConfigError
from egress.jail import namespace as jail
from tests.jail.conftest import JAILED_UID, JailWorld, netns_only
from tests.proxy import EGRESS
from tests.upstream import free_port

NOBODY = Account(JAILED_UID, JAILED_UID, "nobody", "/nonexistent")


@pytest.mark.parametrize("platform, euid, bwrap, message", [
    pytest.param("linux", 0, "/usr/bin/bwrap", None, id="root on Linux can build the jail"),
    pytest.param("linux", 0, None, "egress exec needs bubblewrap (`bwrap`) to build the jail and "
                 "found none on PATH: apt-get install bubblewrap (Debian/Ubuntu), dnf install "
                 "bubblewrap (Fedora)", id="no bubblewrap"),
    pytest.param("linux", 1000, "/usr/bin/bwrap", "egress exec must start as root to create a network namespace (the "
                 "command itself runs as you, not as root): sudo egress exec --skill SKILL -- COMMAND",
                 id="not root"),
    pytest.param("darwin", 0, None, "egress exec needs Linux network namespaces; on this system run skills "
                 "in a container on an internal network instead (see the README)", id="not Linux"),
])
def test_unavailable_says_what_is_missing(platform: str, euid: int, bwrap: str | None,
                                         message: str | None) -> None:
    assert jail.unavailable(platform=platform, euid=euid, bwrap=bwrap) == message


@pytest.mark.parametrize("returncode, status", [
    pytest.param(0, 0, id="success"),
    pytest.param(7, 7, id="failure code passed through"),
    pytest.param(-9, 137, id="SIGKILL"),
    pytest.param(-15, 143, id="SIGTERM"),
])
def test_exit_status_like_a_shell(returncode: int, status: int) -> None:
    assert jail.exit_status(returncode) == status


PROXY = "http://s:t@127.0.0.1:8080"
EGRESS_VARS = {
    **dict.fromkeys(["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                     "all_proxy"], PROXY),
    **dict.fromkeys(["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE",
                     "GIT_SSL_CAINFO", "AWS_CA_BUNDLE", "PIP_CERT", "HTTPLIB2_CA_CERTS",
                     "DENO_CERT", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", "NIX_SSL_CERT_FILE",
                     "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE"], "/tmp/b.pem"),
}


def test_environment_is_minimal_and_routes_everything_through_egress() -> None:
    base = {"PATH": "/usr/bin", "NO_PROXY": "*", "no_proxy": "localhost", "EGRESS_TOKEN": "egr_x",
            "HTTPS_PROXY": "http://elsewhere:3128", "HOME": "/root", "USER": "root",
            "AWS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt", "TERM": "xterm-256color",
            "LANG": "C.UTF-8", "LC_CTYPE": "C.UTF-8", "LC_ALL": "C", "LANGUAGE": "en", "TZ": "UTC",
            "OPENAI_API_KEY": "sk-operator", "AWS_SECRET_ACCESS_KEY": "x", "LD_PRELOAD": "/x.so",
            "SSH_AUTH_SOCK": "/tmp/ssh/agent", "PYTHONPATH": "/x", "LC_lower": "x", "SUDO_UID": "1000"}
    env = jail_environment(base, proxy=PROXY, ca_bundle="/tmp/b.pem", account=NOBODY)
    assert env == {
        "PATH": "/usr/bin", "TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_CTYPE": "C.UTF-8",
        "LC_ALL": "C", "LANGUAGE": "en", "TZ": "UTC",
        "HOME": "/nonexistent", "USER": "nobody", "LOGNAME": "nobody", **EGRESS_VARS,
    }


def test_environment_of_a_bare_uid_and_an_empty_caller() -> None:
    env = jail_environment({}, proxy=PROXY, ca_bundle="/tmp/b.pem", account=Account(54321, 54321))
    assert env == {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/", **EGRESS_VARS}


def test_env_option_adds_named_variables_only() -> None:
    base = {"OPENAI_API_KEY": "sk-operator", "WEATHER_KEY": "w-1", "EMPTY": ""}
    extra = parse_env(["WEATHER_KEY", "MODE=fast", "EMPTY", "EQ=a=b", "HOME=/srv/skill"], base)
    assert extra == {"WEATHER_KEY": "w-1", "MODE": "fast", "EMPTY": "", "EQ": "a=b",
                     "HOME": "/srv/skill"}
    env = jail_environment(base, proxy=PROXY, ca_bundle="/tmp/b.pem", account=NOBODY, extra=extra)
    assert "OPENAI_API_KEY" not in env
    assert (env["WEATHER_KEY"], env["MODE"], env["HOME"]) == ("w-1", "fast", "/srv/skill")


@pytest.mark.parametrize("value, message", [
    pytest.param("MISSING", "--env MISSING: not set in egress exec's environment (sudo drops most "
                 "variables: sudo --preserve-env=MISSING egress exec ..., or --env MISSING=VALUE)",
                 id="unset variable"),
    pytest.param("1BAD=x", "--env '1BAD=x': '1BAD' is not a variable name (letters, digits and _, "
                 "not starting with a digit)", id="bad name"),
    pytest.param("=x", "--env '=x': '' is not a variable name (letters, digits and _, not "
                 "starting with a digit)", id="empty name"),
    *(pytest.param(name, f"--env {name.split('=')[0]}: egress exec sets the proxy and CA "
                   "variables itself, and nothing may name proxy exceptions or the token",
                   id=f"reserved {name}")
      for name in ("HTTPS_PROXY", "no_proxy", "NO_PROXY=*", "SSL_CERT_FILE=/x", "EGRESS_TOKEN",
                   "GIT_SSL_CAINFO")),
])
def test_env_option_refusals(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_env([value], {"HTTPS_PROXY": "x", "no_proxy": "x", "EGRESS_TOKEN": "x"})
    assert str(err.value) == message


@pytest.mark.parametrize("skill, token, url", [
    pytest.param("weather", "egr_abc-_", "http://weather:egr_abc-_@127.0.0.1:8080", id="plain names"),
    pytest.param("a b/c", "t@k:n", "http://a%20b%2Fc:t%40k%3An@127.0.0.1:8080", id="characters a URL reserves"),
])
def test_proxy_url_quotes_credentials(skill: str, token: str, url: str) -> None:
    assert proxy_url(skill, token, 8080) == url


@pytest.mark.parametrize("user, environ, account", [
    pytest.param("nobody", {}, Account(65534, 65534, "nobody", "/nonexistent"), id="--user by name"),
    pytest.param("65534", {}, Account(65534, 65534, "nobody", "/nonexistent"), id="--user by uid"),
    pytest.param("54321", {}, Account(54321, 54321), id="uid without a passwd entry"),
    pytest.param(None, {"SUDO_UID": "65534", "SUDO_GID": "65534"}, Account(65534, 65534, "nobody", "/nonexistent"),
                 id="the user who ran sudo"),
])
def test_account_of_the_command(user: str | None, environ: dict[str, str], account: Account) -> None:
    assert resolve_account(user, environ) == account


@pytest.mark.parametrize("user, environ, message", [
    pytest.param("root", {}, "refusing to run COMMAND as root: root inside the jail could leave it. "
                 "Run egress exec through sudo from your own account, or pass --user with an "
                 "unprivileged user", id="root refused"),
    pytest.param(None, {"SUDO_UID": "0"}, "refusing to run COMMAND as root: root inside the jail could "
                 "leave it. Run egress exec through sudo from your own account, or pass --user with "
                 "an unprivileged user", id="sudo from root refused"),
    pytest.param(None, {}, "who should COMMAND run as? Start egress exec with sudo (the command runs "
                 "as you) or pass --user USER", id="nobody to run as"),
    pytest.param("no-such-user-egress", {}, "--user 'no-such-user-egress': no such user", id="unknown user"),
])
def test_account_refusals(user: str | None, environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_account(user, environ)
    assert str(err.value) == message


def test_ca_bundle_keeps_system_cas_and_adds_egress() -> None:
    assert ca_bundle("SYSTEM\n\n", "  EGRESS\n") == "SYSTEM\nEGRESS\n"
    assert ca_bundle("", "EGRESS") == "EGRESS\n"


# -- refusals before any namespace exists (root) ---------------------------------------------

def _exec(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SUDO_") and k != "EGRESS_TOKEN"}
    return subprocess.run([EGRESS, "exec", *args], capture_output=True, text=True, timeout=60,
                          env={**base, **(env or {})})


@netns_only
def test_refusals_name_what_is_missing(jail_world: JailWorld, tmp_path: Path) -> None:
    w = jail_world
    proxy = ["--proxy", w.proxy.address, "--data-dir", str(w.proxy.data_dir)]
    token = {"EGRESS_TOKEN": w.proxy.tokens["jailed"]}
    dead = free_port()
    unreadable = tmp_path / "missing-token"
    cases = [
        (_exec("--skill", "jailed", *proxy, "--user", "nobody", "--", "true"),
         "egress: no token for skill 'jailed': pass --token-file FILE or set EGRESS_TOKEN "
         "(`egress token issue jailed` makes one)\n"),
        (_exec("--skill", "jailed", *proxy, "--token-file", str(unreadable), "--user", "nobody", "--", "true"),
         f"egress: cannot read --token-file {unreadable}: No such file or directory\n"),
        (_exec("--skill", "jailed", *proxy, "--", "true", env=token),
         "egress: who should COMMAND run as? Start egress exec with sudo (the command runs as you) "
         "or pass --user USER\n"),
        (_exec("--skill", "jailed", *proxy, "--user", "nobody", env=token),
         "egress: no COMMAND given: egress exec --skill SKILL -- COMMAND\n"),
        (_exec("--skill", "jailed", "--proxy", f"127.0.0.1:{dead}", "--user", "nobody", "--", "true", env=token),
         f"egress: no egress proxy answers at 127.0.0.1:{dead} (Connection refused); start `egress "
         f"serve` first or pass --proxy HOST:PORT\n"),
        (_exec("--skill", "ghost", *proxy, "--policies", str(w.proxy.policies), "--user", "nobody",
               "--", "true", env=token),
         f"egress: skill 'ghost' has no policy in {w.proxy.policies}; egress would refuse all of its "
         f"requests\n"),
    ]
    for result, stderr in cases:
        assert (result.returncode, result.stderr) == (1, stderr)
        assert w.proxy.tokens["jailed"] not in result.stderr


@netns_only
def test_missing_bubblewrap_is_named_before_anything_is_built(jail_world: JailWorld,
                                                             tmp_path: Path) -> None:
    w = jail_world
    result = _exec("--skill", "jailed", "--proxy", w.proxy.address, "--data-dir",
                   str(w.proxy.data_dir), "--user", "nobody", "--", "true",
                   env={"EGRESS_TOKEN": w.proxy.tokens["jailed"], "PATH": str(tmp_path)})
    assert (result.returncode, result.stderr) == (126, jail.sandbox.MISSING_BWRAP + "\n")


@netns_only
def test_a_jail_bubblewrap_could_not_build_says_so(jail_world: JailWorld,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    # /bin/false stands in for a bwrap that fails before the command starts (exit 1, like
    # bwrap refused a new /proc): not the command's status, but 126 and a message.
    w = jail_world
    spec = jail.JailSpec(command=("true",), env={"PATH": "/usr/bin:/bin"}, uid=JAILED_UID,
                         gid=JAILED_UID, proxy=(w.proxy.host, w.proxy.port), port=w.proxy.port,
                         resolv_conf="/dev/null", bwrap="/bin/false")
    assert asyncio.run(jail.run(spec)) == 126
    assert capfd.readouterr().err == ("egress exec: bubblewrap could not build the jail "
                                      "(exit status 1)\n")


@netns_only
def test_egress_installed_in_a_private_home_directory(jail_world: JailWorld, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    # `sudo ~/.venv/bin/egress exec`: the interpreter sits in a directory only its owner may
    # enter (0700), and the stage that drops privileges runs it as uid 0 without
    # CAP_DAC_OVERRIDE. The command still runs.
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "python").symlink_to(os.path.realpath(sys.executable))
    os.chown(home, 54321, 54321)
    tmp_path.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(home / "python"))
    w = jail_world
    spec = jail.JailSpec(command=("sh", "-c", "echo ran as $(id -u)"), env={"PATH": "/usr/bin:/bin"},
                         uid=JAILED_UID, gid=JAILED_UID, proxy=(w.proxy.host, w.proxy.port),
                         port=w.proxy.port, resolv_conf="/dev/null")
    assert asyncio.run(jail.run(spec)) == 0
    assert capfd.readouterr() == (f"ran as {JAILED_UID}\n", "")


@netns_only
def test_masked_paths_are_hidden_inside_the_jail(jail_world: JailWorld, tmp_path: Path,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    # Stand-ins for nscd/resolved sockets: a directory with a socket, and a socket file.
    w = jail_world
    masked = w.public / "resolved"
    masked.mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(masked / "io.resolve"))
    lone = socket.socket(socket.AF_UNIX)
    lone.bind(str(w.public / "bus"))
    try:
        (w.public / "resolv.conf").write_text(jail.RESOLV_CONF)
        outside = subprocess.run(w.probe_argv(op="listing", paths=[str(masked), str(w.public / "bus")]),
                                 capture_output=True, text=True, timeout=60)
        assert json.loads(outside.stdout)["paths"] == {str(masked): ["io.resolve"],
                                                       str(w.public / "bus"): "socket"}  # control
        argv = w.probe_argv(op="listing", paths=[str(masked), str(w.public / "bus")])
        spec = jail.JailSpec(command=tuple(argv), env={"PATH": os.environ["PATH"]}, uid=JAILED_UID,
                             gid=JAILED_UID, proxy=(w.proxy.host, w.proxy.port), port=w.proxy.port,
                             resolv_conf=str(w.public / "resolv.conf"),
                             mask=(str(masked), str(w.public / "bus")))
        assert asyncio.run(jail.run(spec)) == 0
        paths = json.loads(capfd.readouterr().out.strip().splitlines()[-1])["paths"]
        assert paths == {str(masked): [], str(w.public / "bus"): "chardev"}  # /dev/null
        assert (masked / "io.resolve").exists()  # hidden inside only
    finally:
        sock.close()
        lone.close()
        for path in (masked / "io.resolve", w.public / "bus", w.public / "resolv.conf"):
            path.unlink(missing_ok=True)
        masked.rmdir()
