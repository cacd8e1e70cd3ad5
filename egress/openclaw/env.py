"""The environment a skill's sandbox or agent needs to go through egress.

    HTTPS_PROXY / HTTP_PROXY (and lowercase)   http://SKILL:TOKEN@HOST:PORT
    NO_PROXY / no_proxy                        empty: nothing may bypass the proxy
    SSL_CERT_FILE, REQUESTS_CA_BUNDLE,         the system's CAs plus egress's CA (egress
    CURL_CA_BUNDLE, GIT_SSL_CAINFO             intercepts hosts whose keys it injects; the
                                               other hosts keep their own certificates)
    NODE_EXTRA_CA_CERTS                        egress's CA alone (Node adds it to its own)
    <KEY_VAR>                                  the placeholder of each imported key

The output is an env file (docker --env-file, systemd EnvironmentFile, `set -a; . FILE`):
KEY=value lines, nothing else. Values never need quoting: tokens, placeholders and paths
egress writes use no spaces or quotes. The CA files come from `egress ca` (and `--bundle`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

__all__ = ["build_env", "env_lines"]

_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")
_BUNDLE_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO")


def build_env(
    *,
    skill: str,
    token: str,
    proxy: str,
    ca_cert: Path,
    ca_bundle: Path,
    placeholders: Mapping[str, str],
    gateway: bool = False,
) -> list[tuple[str, str]]:
    """(name, value) pairs in a stable order. `placeholders`: credential name -> placeholder;
    only names that are environment variables (UPPER_CASE) are exported."""
    url = f"http://{skill}:{token}@{proxy}"
    env = [(name, url) for name in _PROXY_VARS]
    env += [("NO_PROXY", ""), ("no_proxy", "")]
    if gateway:
        env.append(("OPENCLAW_PROXY_URL", url))
    env += [(name, str(ca_bundle)) for name in _BUNDLE_VARS]
    env.append(("NODE_EXTRA_CA_CERTS", str(ca_cert)))
    env += sorted((n, p) for n, p in placeholders.items() if _ENV_NAME.match(n))
    return env


def env_lines(env: list[tuple[str, str]]) -> str:
    return "".join(f"{name}={value}\n" for name, value in env)
