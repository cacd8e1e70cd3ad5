"""`egress openclaw env SKILL`: the lines a skill's sandbox or agent needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from egress.identity import TokenStore
from tests.openclaw.conftest import ClawHome


def env_of(output: str) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in output.splitlines()]
    assert all(len(p) == 2 for p in pairs), output  # an env file: KEY=value lines only
    return dict(pairs)  # type: ignore[arg-type]


def placeholder(claw: ClawHome, skill: str, name: str) -> str:
    text = (claw.policies / f"openclaw-{skill}.yaml").read_text()
    return str(yaml.safe_load(text)["skills"][skill]["credentials"][name]["placeholder"])


@pytest.fixture
def imported(claw: ClawHome, capsys: pytest.CaptureFixture[str]) -> ClawHome:
    assert claw.import_() == 0
    capsys.readouterr()
    return claw


def run_env(claw: ClawHome, *args: str) -> int:
    return claw.run("openclaw", "env", *args, "--data-dir", str(claw.data))


def test_first_call_issues_a_token_and_prints_a_complete_env(
        imported: ClawHome, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_env(imported, "slack-notify", "--proxy", "egress:3128") == 0
    out, err = capsys.readouterr()
    env = env_of(out)
    url = env["HTTPS_PROXY"]
    assert url.startswith("http://slack-notify:egr_") and url.endswith("@egress:3128")
    token = url.removeprefix("http://slack-notify:").removesuffix("@egress:3128")
    assert TokenStore(imported.data).verify("slack-notify", token)
    assert env["HTTP_PROXY"] == env["https_proxy"] == env["http_proxy"] == url
    assert env["NO_PROXY"] == env["no_proxy"] == ""
    assert env["SLACK_BOT_TOKEN"] == placeholder(imported, "slack-notify", "SLACK_BOT_TOKEN")
    bundle = Path(env["SSL_CERT_FILE"])
    ca = Path(env["NODE_EXTRA_CA_CERTS"])
    assert env["REQUESTS_CA_BUNDLE"] == env["CURL_CA_BUNDLE"] == env["GIT_SSL_CAINFO"] == str(bundle)
    assert ca.read_text() in bundle.read_text()
    assert "OPENCLAW_PROXY_URL" not in env
    assert "issued a token for slack-notify; this output is the only place it appears" in err


def test_an_existing_token_is_not_rotated_silently(imported: ClawHome,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert run_env(imported, "github") == 0
    first = env_of(capsys.readouterr().out)["HTTPS_PROXY"]
    ids = TokenStore(imported.data).list()
    assert run_env(imported, "github") == 0
    out, err = capsys.readouterr()
    assert env_of(out)["HTTPS_PROXY"] == "http://github:TOKEN@127.0.0.1:8080"
    assert TokenStore(imported.data).list() == ids
    token = first.removeprefix("http://github:").removesuffix("@127.0.0.1:8080")
    assert TokenStore(imported.data).verify("github", token)  # still the working one
    assert ("github already has a token, and egress keeps only its hash: replace TOKEN below "
            "with it, or run `egress openclaw env github --rotate` for a new one") in err


def test_rotate_replaces_the_token(imported: ClawHome, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_env(imported, "github") == 0
    old = env_of(capsys.readouterr().out)["HTTPS_PROXY"].split(":")[2].split("@")[0]
    assert run_env(imported, "github", "--rotate") == 0
    out, err = capsys.readouterr()
    new = env_of(out)["HTTPS_PROXY"].split(":")[2].split("@")[0]
    store = TokenStore(imported.data)
    assert store.verify("github", new) and not store.verify("github", old)
    assert "(the old one no longer works)" in err


def test_json_output_for_the_sandbox_config(imported: ClawHome,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert run_env(imported, "weather", "--json") == 0
    env = json.loads(capsys.readouterr().out)
    assert env["OPENWEATHER_API_KEY"] == placeholder(imported, "weather", "OPENWEATHER_API_KEY")
    assert env["HTTPS_PROXY"].startswith("http://weather:egr_")


def test_gateway_identity_also_gets_openclaw_proxy_url(claw: ClawHome,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert claw.import_("--gateway", "openclaw") == 0
    capsys.readouterr()
    assert run_env(claw, "openclaw") == 0
    env = env_of(capsys.readouterr().out)
    assert env["OPENCLAW_PROXY_URL"] == env["HTTPS_PROXY"]
    # Gateway credentials are named skill.VAR: the gateway reads placeholders from
    # openclaw.json, not from its environment.
    assert not [k for k in env if k.endswith("_API_KEY") or k.endswith("_TOKEN")]


def test_skill_without_a_policy_is_warned_about(imported: ClawHome,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert run_env(imported, "peekaboo") == 0
    err = capsys.readouterr().err
    assert (f"warning: {imported.policies.resolve()} has no policy for 'peekaboo': egress "
            "refuses all of its traffic (unknown_skill) until one exists") in err


@pytest.mark.parametrize("proxy", [
    pytest.param("127.0.0.1", id="no port"),
    pytest.param("http://127.0.0.1:8080", id="a URL instead of HOST:PORT"),
    pytest.param("a b:80", id="space in the host"),
])
def test_bad_proxy_address_is_refused(imported: ClawHome, capsys: pytest.CaptureFixture[str],
                                      proxy: str) -> None:
    assert run_env(imported, "github", "--proxy", proxy) == 1
    assert capsys.readouterr().err == (
        f"egress: --proxy {proxy!r}: write HOST:PORT, e.g. 127.0.0.1:8080\n")
    assert TokenStore(imported.data).list() == []  # refused before a token was issued


def test_a_name_that_cannot_be_a_proxy_user_is_refused(imported: ClawHome,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert run_env(imported, "evil@host") == 1
    assert capsys.readouterr().err == (
        "egress: 'evil@host' is not a skill name (letters, digits, '.', '_', '-')\n")
