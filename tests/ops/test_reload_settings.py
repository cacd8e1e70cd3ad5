"""Hot reload applies every setting, or refuses the reload with the reason: one test per field.

Each case reloads a running Runtime (what `egress serve` and the addon read on every
decision) with one field of `settings:` changed, and checks the part that uses it changed
with it. A setting that cannot be applied (a CA file that is not PEM, one a settings hook of
the proxy refuses) keeps the running policy and says why.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from egress.ops.runtime import Runtime
from egress.policy.load import load_policy_dir
from egress.policy.model import Mode, PolicySet
from tests.conftest import TestCA

BASE = """\
settings:
  dns: {nameservers: ["127.0.0.1:5353"]}
skills:
  s:
    allow: [{host: api.example.com}]
"""


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(BASE)
    rt = Runtime.create(policies, tmp_path / "data")
    yield rt
    rt.audit.close()


def reload(rt: Runtime, settings: str) -> bool:
    (rt.policy_dir / "p.yaml").write_text(BASE.replace(
        'settings:\n  dns: {nameservers: ["127.0.0.1:5353"]}\n',
        "settings:\n" + textwrap.indent(textwrap.dedent(settings), "  ")))
    return rt.apply_policy(load_policy_dir(rt.policy_dir))


def test_mode(runtime: Runtime) -> None:
    assert reload(runtime, 'mode: report\ndns: {nameservers: ["127.0.0.1:5353"]}\n')
    assert runtime.policy.skills["s"].mode is Mode.REPORT


def test_dns(runtime: Runtime) -> None:
    guard = runtime.guard
    assert reload(runtime, 'dns: {nameservers: ["127.0.0.9:53"], timeout: 1.5}\n')
    assert runtime.guard is not guard  # a new resolver with the new servers
    resolver = runtime.guard._resolver  # noqa: SLF001
    assert repr(resolver) == "DnsResolver(127.0.0.9:53, timeout=1.5s)"


def test_networks(runtime: Runtime) -> None:
    guard = runtime.guard
    assert reload(runtime, 'dns: {nameservers: ["127.0.0.1:5353"]}\n'
                           'networks: {allow: ["10.9.0.0/16"], deny: ["203.0.113.0/24"]}\n')
    assert runtime.guard is guard  # same resolver, new networks
    assert [str(n) for n in runtime.guard.networks.allow] == ["10.9.0.0/16"]
    assert [str(n) for n in runtime.guard.networks.deny] == ["203.0.113.0/24"]


def test_audit(runtime: Runtime) -> None:
    assert reload(runtime, 'dns: {nameservers: ["127.0.0.1:5353"]}\n'
                           "audit: {max_bytes: 1MiB, max_files: 3, budget: 7, "
                           "budget_interval: 10s, budget_distinct: 9}\n")
    assert (runtime.audit.rotation.max_bytes, runtime.audit.rotation.max_files) == (2**20, 3)
    budget = runtime.folder.budget
    assert (budget.lines, budget.interval, budget.distinct) == (7, 10.0, 9)


def test_connections(runtime: Runtime) -> None:
    # The addon's connection guard reads them from the policy on every check.
    assert reload(runtime, 'dns: {nameservers: ["127.0.0.1:5353"]}\n'
                           "connections: {idle_timeout: 42s, request_head_timeout: 7s}\n")
    c = runtime.policy.settings.connections
    assert (c.idle_timeout, c.request_head_timeout) == (42.0, 7.0)


def test_websocket(runtime: Runtime) -> None:
    assert reload(runtime, 'dns: {nameservers: ["127.0.0.1:5353"]}\n'
                           "websocket: {max_message: 64KiB}\n")
    assert runtime.policy.settings.websocket.max_message == 64 * 1024


def test_upstream_ca_reaches_the_proxy_hook_and_the_token_client(runtime: Runtime,
                                                                  test_ca: TestCA) -> None:
    applied: list[str | None] = []

    def hook(new: PolicySet) -> Callable[[], None]:
        return lambda: applied.append(new.settings.upstream_ca)

    runtime.settings_hooks.append(hook)
    (runtime.policy_dir / "ca.pem").write_text(Path(test_ca.path).read_text())
    assert reload(runtime, 'dns: {nameservers: ["127.0.0.1:5353"]}\nupstream_ca: ca.pem\n')
    assert applied == [str(runtime.policy_dir / "ca.pem")]


def test_upstream_ca_that_is_not_pem_refuses_the_reload(runtime: Runtime) -> None:
    digest = runtime.policy.digest
    (runtime.policy_dir / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    assert not reload(runtime, 'dns: {nameservers: ["127.0.0.1:5353"]}\nupstream_ca: ca.pem\n')
    assert runtime.policy.digest == digest  # the running policy stays
    assert runtime.reloads.last_error is not None
    assert "settings.upstream_ca: " in runtime.reloads.last_error
    assert "not a readable PEM file of CA certificates" in runtime.reloads.last_error


def test_a_settings_hook_that_refuses_refuses_the_reload(runtime: Runtime) -> None:
    def hook(new: PolicySet) -> Callable[[], None]:
        raise ValueError("the proxy cannot use it")

    runtime.settings_hooks.append(hook)
    digest = runtime.policy.digest
    assert not reload(runtime, 'mode: report\ndns: {nameservers: ["127.0.0.1:5353"]}\n')
    assert runtime.policy.digest == digest
    assert "settings: cannot be applied: the proxy cannot use it" in str(
        runtime.reloads.last_error)


def test_secrets(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = runtime.secrets
    assert reload(runtime, 'dns: {nameservers: ["127.0.0.1:5353"]}\n'
                           "secrets:\n"
                           "  vault: {addr: 'http://127.0.0.1:8200', auth: {token_env: T}}\n"
                           "  onepassword: {connect_url: 'http://op:8080', token_env: T}\n"
                           "  doppler: {token_env: T}\n"
                           "  cache: {ttl: 5, grace: 1}\n"
                           "  max_age: 30d\n")
    assert runtime.secrets is not cache  # new backends and cache timings
    assert sorted(runtime.secrets._backends) == ["doppler", "env", "file", "op", "vault"]  # noqa: SLF001
    assert runtime.secrets._settings.ttl == 5.0  # noqa: SLF001
    assert runtime.policy.settings.secrets is not None
    assert runtime.policy.settings.secrets.max_age == 30 * 86400


def test_a_new_oauth_credential_gets_a_token_client(runtime: Runtime) -> None:
    assert runtime.oauth is None
    (runtime.policy_dir / "p.yaml").write_text(BASE + (
        "    credentials:\n      o:\n        oauth2: {token_url: 'https://auth.example.com/t',"
        " client_id: 'env:A', client_secret: 'env:B'}\n"))
    assert runtime.apply_policy(load_policy_dir(runtime.policy_dir))
    assert runtime.oauth is not None
