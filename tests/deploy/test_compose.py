"""docker/compose.yaml: the example skill's only way out is egress (checked statically:
the build machines have no Docker engine)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.checks import compose_problems

COMPOSE = Path(__file__).parents[2] / "docker" / "compose.yaml"
SKILL = "weather-skill"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def test_the_skill_can_reach_nothing_but_egress(compose: dict[str, Any]) -> None:
    assert compose_problems(compose, skill=SKILL) == []


def test_skill_network_is_internal_and_named_for_openclaw(compose: dict[str, Any]) -> None:
    assert compose["services"][SKILL]["networks"] == ["skills"]
    assert compose["networks"]["skills"] == {"name": "egress-skills", "internal": True}


def test_only_egress_bridges_the_internal_networks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["egress"]["networks"] == ["skills", "secrets", "outside"]
    assert services["openbao"]["networks"] == ["secrets"]
    assert compose["networks"]["secrets"]["internal"] is True


def test_proxy_credentials_come_from_the_environment_never_the_file(compose: dict[str, Any]) -> None:
    env = compose["services"][SKILL]["environment"]
    assert env["HTTPS_PROXY"] == "http://weather:${WEATHER_SKILL_TOKEN:-}@egress:8080"
    assert env["WEATHER_API_KEY"] == "egress-placeholder-injected-by-the-proxy"


def test_containers_are_hardened(compose: dict[str, Any]) -> None:
    for name in ("egress", SKILL):
        svc = compose["services"][name]
        assert svc["read_only"] is True, name
        assert svc["cap_drop"] == ["ALL"], name
        assert svc["security_opt"] == ["no-new-privileges:true"], name
    assert "ports" not in compose["services"]["egress"]


def test_the_skill_runs_what_the_example_policy_allows(compose: dict[str, Any]) -> None:
    from egress.policy.load import load_policy_dir

    policy = load_policy_dir(Path(__file__).parents[2] / "policies")
    assert "weather" in policy.skills
    assert "api.open-meteo.com" in compose["services"][SKILL]["command"][-1]


def _mutate(doc: dict[str, Any], change: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    svc = doc["services"][SKILL]
    if change == "not internal":
        doc["networks"]["skills"]["internal"] = False
    elif change == "second network":
        svc["networks"] = ["skills", "outside"]
    elif change == "host network":
        svc["network_mode"] = "host"
    elif change == "published port":
        svc["ports"] = ["9000:9000"]
    elif change == "literal token":
        svc["environment"]["HTTPS_PROXY"] = "http://weather:egr_abcdefghijklmnopqrstuvwxyz012345@egress:8080"
    elif change == "real key":
        svc["environment"]["WEATHER_API_KEY"] = "sk_live_abcdefghijklmnop"
    elif change == "vault token":
        svc["environment"]["VAULT_TOKEN"] = "${EGRESS_VAULT_TOKEN:-}"
    elif change == "another bridge":
        doc["services"]["openbao"]["networks"] = ["secrets", "skills", "outside"]
    elif change == "proxy elsewhere":
        svc["environment"]["HTTP_PROXY"] = "http://weather:${T:-}@example.com:8080"
    elif change == "no_proxy":
        svc["environment"]["NO_PROXY"] = "*"
    return doc


@pytest.mark.parametrize("change, problem", [
    pytest.param("not internal", "weather-skill: network skills is not internal: true", id="network with a gateway"),
    pytest.param("second network", "weather-skill: on networks ['outside', 'skills']; it must be on exactly one internal network", id="skill on a second network"),
    pytest.param("host network", "weather-skill: network_mode 'host' bypasses the networks", id="host networking"),
    pytest.param("published port", "weather-skill: ports is set", id="published port"),
    pytest.param("literal token", "service weather-skill: HTTPS_PROXY holds what looks like a real credential", id="token written into the file"),
    pytest.param("real key", "service weather-skill: WEATHER_API_KEY holds what looks like a real credential", id="real API key instead of a placeholder"),
    pytest.param("vault token", "weather-skill: VAULT_TOKEN gives the skill secret-manager access", id="skill with secret-manager access"),
    pytest.param("another bridge", "openbao joins skills and ['outside']: a way out around egress", id="another container bridges out"),
    pytest.param("proxy elsewhere", "weather-skill: HTTP_PROXY does not point at egress:8080", id="proxy variable names another host"),
    pytest.param("no_proxy", "weather-skill: NO_PROXY is not empty", id="proxy exceptions"),
])
def test_each_check_catches_its_problem(compose: dict[str, Any], change: str, problem: str) -> None:
    assert problem in compose_problems(_mutate(compose, change), skill=SKILL)
