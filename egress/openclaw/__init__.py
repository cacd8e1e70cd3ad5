"""OpenClaw integration: move skills' keys out of openclaw.json and wire agents to egress.

    import    openclaw.json (JSON5) + SKILL.md files  ->  report-mode policies with one
              credential per key, keys in files or OpenBao/Vault, and a copy of the config
              holding placeholders of the keys' shape (importer.run_import)
    env       the proxy, CA and placeholder variables for a skill's sandbox (env.build_env)

Modules: config (find, read, rewrite openclaw.json), skills (SKILL.md), keys (key kinds and
placeholders), plan (what an import changes, pure), render (policy text), store (files,
Vault), importer (the ordered writes), env.

What it may import: the policy core, egress.secrets (store.py: the Vault backend), identity
and errors. Never the proxy, ops or the CLI (egress/cli/openclaw.py calls it).
"""

from __future__ import annotations

from egress.openclaw.env import build_env, env_lines
from egress.openclaw.importer import ImportOptions, ImportResult, run_import
from egress.openclaw.keys import KeyKind, key_kind, make_placeholder

__all__ = [
    "ImportOptions",
    "ImportResult",
    "KeyKind",
    "build_env",
    "env_lines",
    "key_kind",
    "make_placeholder",
    "run_import",
]
