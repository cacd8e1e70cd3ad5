"""docker/k8s/: the manifests parse, fit together, and let skill pods reach only egress."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from egress.identity import TokenStore
from egress.policy.load import load_policy_dir
from tests.deploy.checks import k8s_problems
from tests.proxy import EGRESS

K8S = Path(__file__).parents[2] / "docker" / "k8s"


def listed() -> list[dict[str, Any]]:
    """What `kubectl apply -k docker/k8s` applies: rendered by kubectl's kustomize when it is
    installed, else the files the kustomization lists."""
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        out = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                             timeout=60, check=True).stdout
        return [d for d in yaml.safe_load_all(out) if d]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def issue_secrets(data: Path, skill: str) -> list[dict[str, Any]]:
    out = subprocess.run([EGRESS, "token", "issue", skill, "--data-dir", str(data),
                          "--k8s-secret"], capture_output=True, text=True, timeout=60, check=True)
    assert "egr_" not in out.stderr  # the token goes only into the Secret
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("k8s-state")


@pytest.fixture(scope="module")
def made(state: Path) -> list[dict[str, Any]]:
    """The token Secrets, made once with `egress token issue --k8s-secret`."""
    return issue_secrets(state, "weather")


@pytest.fixture(scope="module")
def docs(made: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The manifests as deployed: the kustomization and the egress-tokens Secret (hashes).
    The skill's token Secret is left out: it holds a real token, which is what the checks
    refuse to find in files kept in a repository."""
    return listed() + [d for d in made if d["metadata"]["name"] == "egress-tokens"]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_manifests_fit_together_and_confine_skills(docs: list[dict[str, Any]]) -> None:
    assert k8s_problems(docs) == []


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


def test_every_object_has_kind_name_and_namespace(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        assert doc["apiVersion"] and doc["kind"], doc
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "egress", doc["metadata"]["name"]


def test_configmap_policies_are_valid_egress_policies(docs: list[dict[str, Any]], tmp_path: Path) -> None:
    for name, text in find(docs, "ConfigMap", "egress-policies")["data"].items():
        (tmp_path / name).write_text(text)
    policy = load_policy_dir(tmp_path)
    assert sorted(policy.skills) == ["weather"]


def test_token_secret_holds_hashes_only(made: list[dict[str, Any]], tmp_path: Path) -> None:
    text = find(made, "Secret", "egress-tokens")["stringData"]["tokens.json"]
    token = find(made, "Secret", "weather-skill-token")["stringData"]["token"]
    assert token.startswith("egr_") and token not in text
    (tmp_path / "tokens.json").write_text(text)
    assert TokenStore(tmp_path).verify("weather", token)  # what the replicas mount works


def test_reapplying_the_kustomization_never_resets_tokens(state: Path) -> None:
    """`kubectl apply -k docker/k8s` a second time must not put example tokens back (every
    skill got 407): the kustomization holds no Secret at all; tokens are made once."""
    rendered = listed()
    assert [d["metadata"]["name"] for d in rendered if d["kind"] == "Secret"] == []
    mounted = find(rendered, "Deployment", "egress")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tokens", "secret": {"secretName": "egress-tokens"}} in mounted
    # A second skill: egress-tokens then holds both hashes, so applying it keeps the first.
    second = issue_secrets(state, "news")
    store = json.loads(find(second, "Secret", "egress-tokens")["stringData"]["tokens.json"])
    assert sorted(store["tokens"]) == ["news", "weather"]
    assert find(second, "Secret", "news-skill-token")["metadata"]["namespace"] == "egress"


def test_replicas_run_stateless_from_configmap_and_secrets(docs: list[dict[str, Any]]) -> None:
    dep = find(docs, "Deployment", "egress")
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert volumes["policies"]["configMap"]["name"] == "egress-policies"
    assert mounts["policies"] == "/etc/egress/policies"
    assert env["EGRESS_TOKENS_FILE"] == mounts["tokens"] + "/tokens.json"
    assert volumes["data"] == {"name": "data", "emptyDir": {"sizeLimit": "256Mi"}}
    assert env["EGRESS_AUDIT"] == "-"


def test_skill_gets_proxy_address_from_service_variables(docs: list[dict[str, Any]]) -> None:
    dep = find(docs, "Deployment", "weather-skill")
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    names = list(env)
    # $(VAR) expands only variables defined earlier in the list (or Service variables).
    assert names.index("SKILL_TOKEN") < names.index("HTTPS_PROXY")
    assert env["SKILL_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "weather-skill-token"
    assert env["HTTPS_PROXY"]["value"] == (
        "http://weather:$(SKILL_TOKEN)@$(EGRESS_SERVICE_HOST):$(EGRESS_SERVICE_PORT)")
    assert find(docs, "Service", "egress")["spec"]["ports"][0]["port"] == 8080


def _mutate(docs: list[dict[str, Any]], change: str) -> list[dict[str, Any]]:
    docs = copy.deepcopy(docs)
    skills_np = find(docs, "NetworkPolicy", "skills-only-via-egress")
    dep = find(docs, "Deployment", "egress")
    if change == "dns allowed":
        skills_np["spec"]["egress"].append({"to": [{"namespaceSelector": {}}],
                                           "ports": [{"protocol": "UDP", "port": 53}]})
    elif change == "everywhere":
        skills_np["spec"]["egress"].append({"ports": [{"protocol": "TCP", "port": 443}]})
    elif change == "ip block":
        skills_np["spec"]["egress"][0]["to"].append({"ipBlock": {"cidr": "0.0.0.0/0"}})
    elif change == "no egress type":
        skills_np["spec"]["policyTypes"] = ["Ingress"]
    elif change == "unselected skill":
        skills_np["spec"]["podSelector"] = {"matchLabels": {"role": "other"}}
    elif change == "one replica":
        dep["spec"]["replicas"] = 1
    elif change == "audit to file":
        for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]:
            if e["name"] == "EGRESS_AUDIT":
                e["value"] = "/var/lib/egress/audit.jsonl"
    elif change == "writable root":
        dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    elif change == "wrong selector":
        find(docs, "Service", "egress")["spec"]["selector"] = {"app": "nope"}
    elif change == "literal token":
        docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {
            "name": "weather-skill-token", "namespace": "egress"},
            "stringData": {"token": "egr_" + "a" * 43}})  # someone commits a token
    return docs


@pytest.mark.parametrize("change, problem", [
    pytest.param("dns allowed", "NetworkPolicy skills-only-via-egress: allows a peer other than the egress pods: {'namespaceSelector': {}}", id="DNS to any namespace"),
    pytest.param("everywhere", "NetworkPolicy skills-only-via-egress: an egress rule without `to` allows everywhere", id="rule without peers"),
    pytest.param("ip block", "NetworkPolicy skills-only-via-egress: allows a peer other than the egress pods: {'ipBlock': {'cidr': '0.0.0.0/0'}}", id="ipBlock to the internet"),
    pytest.param("no egress type", "no NetworkPolicy restricts egress of the weather-skill pods", id="policy without Egress type"),
    pytest.param("unselected skill", "no NetworkPolicy selects the weather-skill pods", id="skill pods not selected"),
    pytest.param("one replica", "Deployment egress: fewer than 2 replicas", id="single replica"),
    pytest.param("audit to file", "Deployment egress: EGRESS_AUDIT is not '-' (audit to stdout)", id="audit not on stdout"),
    pytest.param("writable root", "Deployment egress: root filesystem is writable", id="writable root filesystem"),
    pytest.param("wrong selector", "Service egress: selector does not match the egress pods", id="service selects nothing"),
    pytest.param("literal token", "Secret weather-skill-token: token holds what looks like a real credential", id="real token in a manifest"),
])
def test_each_check_catches_its_problem(docs: list[dict[str, Any]], change: str, problem: str) -> None:
    assert problem in k8s_problems(_mutate(docs, change))
