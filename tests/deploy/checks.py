"""Static checks of the deployment files, as pure functions from parsed files to problems.

Each returns a list of sentences (empty: fine), so the tests can show every problem at once
and can prove each check fires by feeding it a broken copy of the real file.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

# Variable names that hold credentials, and values that look like real credentials.
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|PRIVATE|CREDENTIAL", re.I)
SECRET_VALUE = [
    re.compile(r"egr_[A-Za-z0-9_-]{20,}"),  # an egress proxy token
    re.compile(r"sk_(?:live|test)_[A-Za-z0-9]{8,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\b(?:hvs|s)\.[A-Za-z0-9]{20,}"),  # OpenBao/Vault tokens
    re.compile(r"\b[0-9a-f]{40,}\b"),
]
_INTERPOLATION = re.compile(r"\$\{[^}]*\}|\$\([A-Za-z_][A-Za-z0-9_]*\)")
PLACEHOLDER = re.compile(r"placeholder|replace", re.I)
_REFERENCE_NAME = re.compile(r"_(FILE|PATH|DIR)$", re.I)  # names a file holding the secret
PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")


def literal(value: str) -> str:
    """The value with compose ${...} and Kubernetes $(...) references removed."""
    return _INTERPOLATION.sub("", value)


def secret_problems(where: str, env: Mapping[str, str]) -> list[str]:
    problems = []
    for name, value in env.items():
        text = literal(str(value))
        if any(p.search(text) for p in SECRET_VALUE):
            problems.append(f"{where}: {name} holds what looks like a real credential")
        elif (SECRET_NAME.search(name) and not _REFERENCE_NAME.search(name) and text
              and not PLACEHOLDER.search(text)):
            problems.append(f"{where}: {name} has a literal value; use a reference or a placeholder")
        if name.upper() in PROXY_VARS:
            password = urlsplit(text).password
            if password:
                problems.append(f"{where}: {name} has a literal proxy token")
    return problems


# -- compose -------------------------------------------------------------------------------

def _networks(service: Mapping[str, Any]) -> list[str]:
    nets = service.get("networks", [])
    return sorted(nets) if isinstance(nets, (list, dict)) else []


def _env(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def compose_problems(doc: Mapping[str, Any], *, skill: str, proxy: str = "egress") -> list[str]:
    problems: list[str] = []
    services: Mapping[str, Any] = doc.get("services", {})
    networks: Mapping[str, Any] = doc.get("networks", {}) or {}
    internal = {n for n, spec in networks.items() if (spec or {}).get("internal") is True}
    svc = services.get(skill)
    if svc is None:
        return [f"no service {skill}"]
    if "network_mode" in svc:
        problems.append(f"{skill}: network_mode {svc['network_mode']!r} bypasses the networks")
    nets = _networks(svc)
    if len(nets) != 1:
        problems.append(f"{skill}: on networks {nets}; it must be on exactly one internal network")
    for net in nets:
        if net not in internal:
            problems.append(f"{skill}: network {net} is not internal: true")
        members = [name for name, s in services.items() if net in _networks(s)]
        if proxy not in members:
            problems.append(f"{skill}: {proxy} is not on network {net}")
        for name in members:
            outside = [n for n in _networks(services[name]) if n not in internal]
            if name != proxy and outside:
                problems.append(f"{name} joins {net} and {outside}: a way out around {proxy}")
    for key in ("ports", "extra_hosts", "dns"):
        if svc.get(key):
            problems.append(f"{skill}: {key} is set")
    env = _env(svc)
    listen = _env(services.get(proxy, {})).get("EGRESS_LISTEN", "0.0.0.0:8080")
    for var in ("HTTPS_PROXY", "HTTP_PROXY"):
        url = urlsplit(literal(env.get(var, "")))
        if (url.hostname, url.port) != (proxy, int(listen.rsplit(":", 1)[1])):
            problems.append(f"{skill}: {var} does not point at {proxy}:{listen.rsplit(':', 1)[1]}")
    if env.get("NO_PROXY"):
        problems.append(f"{skill}: NO_PROXY is not empty")
    for name in env:
        if re.match(r"(VAULT|BAO)_", name):
            problems.append(f"{skill}: {name} gives the skill secret-manager access")
    for name, service in services.items():
        problems += secret_problems(f"service {name}", _env(service))
    return problems


# -- kubernetes ----------------------------------------------------------------------------

def _one(docs: Iterable[Mapping[str, Any]], kind: str, name: str) -> Mapping[str, Any] | None:
    for doc in docs:
        if doc.get("kind") == kind and doc.get("metadata", {}).get("name") == name:
            return doc
    return None


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    wanted = selector.get("matchLabels", {})
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def _pod(deployment: Mapping[str, Any]) -> Mapping[str, Any]:
    template: Mapping[str, Any] = deployment["spec"]["template"]
    return template


def _container_env(container: Mapping[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}


def k8s_problems(docs: Sequence[Mapping[str, Any]], *, skill: str = "weather-skill") -> list[str]:
    problems: list[str] = []
    dep = _one(docs, "Deployment", "egress")
    if dep is None:
        return ["no Deployment egress"]
    if dep["spec"].get("replicas", 1) < 2:
        problems.append("Deployment egress: fewer than 2 replicas")
    pod = _pod(dep)
    labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    container = spec["containers"][0]
    env = _container_env(container)
    if env.get("EGRESS_AUDIT") != "-":
        problems.append("Deployment egress: EGRESS_AUDIT is not '-' (audit to stdout)")
    sc = container.get("securityContext", {})
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append("Deployment egress: root filesystem is writable")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("Deployment egress: privilege escalation allowed")
    if spec.get("securityContext", {}).get("runAsNonRoot") is not True:
        problems.append("Deployment egress: may run as root")
    for volume in spec.get("volumes", []):
        for kind, key in (("ConfigMap", "configMap"), ("Secret", "secret")):
            if key in volume:
                ref = volume[key].get("name") or volume[key].get("secretName")
                if _one(docs, kind, ref) is None and not volume[key].get("optional"):
                    problems.append(f"Deployment egress: volume {volume['name']} needs missing {kind} {ref}")
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    svc = _one(docs, "Service", "egress")
    if svc is None:
        problems.append("no Service egress")
    else:
        if not _selects({"matchLabels": svc["spec"].get("selector", {})}, labels):
            problems.append("Service egress: selector does not match the egress pods")
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if target not in ports and target not in ports.values():
                problems.append(f"Service egress: targetPort {target} is no container port")
    problems += _network_policy_problems(docs, labels, set(ports.values()), skill)
    for doc in docs:
        if doc.get("kind") == "Deployment":
            for c in _pod(doc)["spec"]["containers"]:
                problems += secret_problems(f"Deployment {doc['metadata']['name']}", _container_env(c))
        if doc.get("kind") == "Secret":
            # tokens.json holds hashes, never tokens; its format has a test of its own.
            data = {k: str(v) for k, v in doc.get("stringData", {}).items() if k != "tokens.json"}
            problems += secret_problems(f"Secret {doc['metadata']['name']}", data)
    return problems


def _network_policy_problems(docs: Sequence[Mapping[str, Any]], egress_labels: Mapping[str, str],
                             proxy_ports: set[int], skill: str) -> list[str]:
    problems = []
    skill_dep = _one(docs, "Deployment", skill)
    if skill_dep is None:
        return [f"no Deployment {skill}"]
    skill_labels = _pod(skill_dep)["metadata"]["labels"]
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"
                and _selects(d["spec"].get("podSelector", {}), skill_labels)]
    if not policies:
        return [f"no NetworkPolicy selects the {skill} pods"]
    if not any("Egress" in p["spec"].get("policyTypes", []) for p in policies):
        problems.append(f"no NetworkPolicy restricts egress of the {skill} pods")
    for policy in policies:
        name = policy["metadata"]["name"]
        for rule in policy["spec"].get("egress", []):
            peers = rule.get("to") or []
            if not peers:
                problems.append(f"NetworkPolicy {name}: an egress rule without `to` allows everywhere")
            for peer in peers:
                if set(peer) != {"podSelector"} or not _selects(peer["podSelector"], egress_labels):
                    problems.append(f"NetworkPolicy {name}: allows a peer other than the egress pods: {peer}")
            ports = rule.get("ports") or []
            if not ports or any(p.get("protocol", "TCP") != "TCP" or p.get("port") not in proxy_ports
                                for p in ports):
                problems.append(f"NetworkPolicy {name}: allows ports other than the proxy's")
    return problems


# -- systemd -------------------------------------------------------------------------------

def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        if current is None or "=" not in line:
            raise ValueError(f"not a unit file line: {raw!r}")
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_problems(unit: Mapping[str, Mapping[str, list[str]]]) -> list[str]:
    service = unit.get("Service", {})

    def last(key: str) -> str | None:
        values = service.get(key)
        return values[-1] if values else None

    problems = []
    user = last("User")
    if last("DynamicUser") != "yes" and user in (None, "", "root", "0"):
        problems.append("runs as root: set User= (a dedicated user) or DynamicUser=yes")
    for key, want in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                      ("ProtectHome", "yes"), ("PrivateTmp", "yes"), ("StateDirectory", "egress"),
                      ("CapabilityBoundingSet", "")):
        if last(key) != want:
            problems.append(f"{key} is {last(key)!r}, want {want!r}")
    for key in ("MemoryMax", "CPUQuota"):
        if not last(key):
            problems.append(f"{key} is not set")
    exec_start = last("ExecStart") or ""
    argv = shlex.split(exec_start)
    listen = argv[argv.index("--listen") + 1] if "--listen" in argv[:-1] else "127.0.0.1:8080"
    if not (listen.startswith("127.") or listen.startswith("[::1]")):
        problems.append(f"listens on {listen}, not on loopback")
    if "Install" not in unit:
        problems.append("no [Install] section")
    return problems


# -- Dockerfile ----------------------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def dockerfile_problems(text: str) -> list[str]:
    problems = []
    instructions = dockerfile_instructions(text)
    args = {}
    for word, rest in instructions:
        if word == "ARG" and "=" in rest:
            k, _, v = rest.partition("=")
            args[k] = v
    images = [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), rest.split()[0])
              for word, rest in instructions if word == "FROM"]
    for image in images:
        if not re.fullmatch(r"python:3\.13\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image):
            problems.append(f"base image {image} is not a pinned python:3.13.x-slim")
    users = [rest for word, rest in instructions if word == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the image runs as root")
    if not any(word == "HEALTHCHECK" for word, _ in instructions):
        problems.append("no HEALTHCHECK")
    for word, rest in instructions:
        if word == "RUN" and "pip install" in rest:
            for part in rest.split("&&"):
                if "pip install" in part and "--no-deps" not in part and "setuptools==" not in part:
                    problems.append(f"unpinned pip install: {part.strip()}")
    volumes = " ".join(rest for word, rest in instructions if word == "VOLUME")
    if "/var/lib/egress" not in volumes:
        problems.append("the data directory is not a VOLUME")
    return problems
