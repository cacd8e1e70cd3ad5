"""egress: an outbound allowlist proxy for AI-agent skills.

The published surface: what scripts and other front ends may import from `egress` directly.
Errors and reasons load at once; the rest (the policy core, `EgressAddon`, `Gate`, ...)
on first use, so `import egress` (and so every CLI verb) costs neither the YAML and IDNA
libraries nor mitmproxy, aiohttp or dnspython until a name is used. tests/test_layout.py pins `__all__`.

The house (README, "Development"): egress/policy is the pure core; netguard, secrets,
credentials, audit and identity are adapters over it; proxy (the only package importing
mitmproxy) and ops run on top; cli dispatches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from egress.errors import (
    ConfigError,
    EgressError,
    IdentityError,
    PolicyError,
    PolicyErrors,
    ResolveError,
    SecretError,
    SecretNotFound,
    SecretUnavailable,
)
from egress.reasons import Problem, Reason

if TYPE_CHECKING:
    from egress.policy.decide import Decision, Destination, Verdict, decide
    from egress.policy.load import load_policy_dir, load_policy_texts
    from egress.policy.model import PolicySet
    from egress.proxy.addon import EgressAddon
    from egress.proxy.gate import Admitted, Arrival, Gate, Refused

__version__ = "0.1.0"

__all__ = [
    "Admitted",
    "Arrival",
    "ConfigError",
    "Decision",
    "Destination",
    "EgressAddon",
    "EgressError",
    "Gate",
    "IdentityError",
    "PolicyError",
    "PolicyErrors",
    "PolicySet",
    "Problem",
    "Reason",
    "Refused",
    "ResolveError",
    "SecretError",
    "SecretNotFound",
    "SecretUnavailable",
    "Verdict",
    "__version__",
    "decide",
    "load_policy_dir",
    "load_policy_texts",
]

_LAZY = {"EgressAddon": "egress.proxy.addon", "Admitted": "egress.proxy.gate",
         "Arrival": "egress.proxy.gate", "Gate": "egress.proxy.gate",
         "Refused": "egress.proxy.gate", "Decision": "egress.policy.decide",
         "Destination": "egress.policy.decide", "Verdict": "egress.policy.decide",
         "decide": "egress.policy.decide", "load_policy_dir": "egress.policy.load",
         "load_policy_texts": "egress.policy.load", "PolicySet": "egress.policy.model"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
