"""A running egress that ships its audit lines to real receivers, and a denial generator.

    with ship_world(tmp, ship_yaml) as w:       # egress serve with settings.audit.ship
        w.deny_connects(10_000)                 # pipelined CONNECTs to hosts no rule names
        w.audit_lines()                         # DATA_DIR/audit.jsonl as written (strings)

Denials need no DNS or upstream: `host_not_allowed` is decided before either. The audit
budget is lifted so that every denial is one line (the budget folds floods otherwise).
"""

from __future__ import annotations

import json
import socket
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.clients import basic, read_response
from tests.proxy import Proxy, run_proxy, written_lines
from tests.upstream import free_port

SKILL = "alpha"


def policy(ship: str, extra_audit: str = "") -> str:
    return textwrap.dedent("""\
        settings:
          audit:
            budget: 1000000
            budget_distinct: 1000000
        """) + textwrap.indent(textwrap.dedent(extra_audit), "    ") + \
        textwrap.indent("ship:\n" + textwrap.indent(textwrap.dedent(ship), "  "), "    ") + \
        textwrap.dedent(f"""\
        skills:
          {SKILL}:
            allow:
              - host: api.allowed.test
        """)


@dataclass
class ShipWorld:
    proxy: Proxy
    admin_port: int
    policy_file: Path

    def deny_connects(self, count: int, *, connections: int = 4, tag: str = "d") -> None:
        """`count` CONNECTs to distinct hosts no rule names, pipelined on a few connections;
        returns once every 403 arrived (each is one audit line)."""
        auth = basic(SKILL, self.proxy.tokens[SKILL])
        shares = [count // connections + (1 if i < count % connections else 0)
                  for i in range(connections)]
        errors: list[BaseException] = []

        def run(k: int, n: int) -> None:
            try:
                with socket.create_connection((self.proxy.host, self.proxy.port),
                                              timeout=120) as sock:
                    data = b"".join(
                        f"CONNECT {tag}-{k}-{i}.denied.test:443 HTTP/1.1\r\nHost: "
                        f"{tag}-{k}-{i}.denied.test:443\r\nProxy-Authorization: {auth}\r\n\r\n"
                        .encode() for i in range(n))
                    sender = threading.Thread(target=sock.sendall, args=(data,), daemon=True)
                    sender.start()
                    marker, seen, tail = b"HTTP/1.1 403", 0, b""
                    while seen < n:
                        chunk = sock.recv(1 << 16)
                        if not chunk:
                            raise AssertionError(f"connection closed after {seen} of {n}")
                        data = tail + chunk  # a marker cut between two reads counts once
                        seen += data.count(marker)
                        tail = data[-(len(marker) - 1):]
                    sender.join(30)
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(k, n)) for k, n in enumerate(shares) if n]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors, errors
        assert not any(t.is_alive() for t in threads)

    def deny_http(self, paths: list[str], *, host: str = "exfil.denied.test") -> None:
        """Plain-HTTP GETs (kind http in the audit log), one after the other, each a 403."""
        auth = basic(SKILL, self.proxy.tokens[SKILL])
        with socket.create_connection((self.proxy.host, self.proxy.port), timeout=30) as sock:
            for path in paths:
                sock.sendall(f"GET http://{host}{path} HTTP/1.1\r\nHost: {host}\r\n"
                             f"Proxy-Authorization: {auth}\r\n\r\n".encode())
                assert read_response(sock).status == 403

    def audit_lines(self) -> list[str]:
        return written_lines(self.proxy.audit_path)

    def admin(self, path: str) -> httpx.Response:
        with httpx.Client(timeout=10, trust_env=False) as client:
            return client.get(f"http://127.0.0.1:{self.admin_port}{path}")

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in self.admin("/metrics").text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out


@contextmanager
def ship_world(tmp: Path, ship: str, *, extra_audit: str = "",
               env: dict[str, str] | None = None) -> Iterator[ShipWorld]:
    policies = tmp / "policies"
    policies.mkdir(parents=True)
    policy_file = policies / "policy.yaml"
    policy_file.write_text(policy(ship, extra_audit))
    admin_port = free_port()
    with run_proxy(policies, tmp / "data", [SKILL], env=env,
                   args=["--admin", f"127.0.0.1:{admin_port}"]) as proxy:
        yield ShipWorld(proxy, admin_port, policy_file)


def records(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines]
