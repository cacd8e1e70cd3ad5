"""What can be known about every secret reference without fetching it: the load-time checks.

`egress check` and `egress serve` (at start and on every reload) run `reference_problems`
over a loaded policy and print or log one `file:line: field: message` per problem:

* `env:NAME`: the variable is set and not empty in egress's environment;
* `file:/PATH`: the file exists, is a regular file, and egress may read it;
* `vault:`, `op://`, `doppler:`: the backend's token variable is set (or its token file,
  AppRole secret_id file and CA file are readable); a reference to a backend without
  settings is already a load error (egress/policy/load.py).

Nothing is fetched and no value is read beyond a file's permission bits; messages name
variables and paths, never values. The environment is the one egress runs in: run
`egress check` where egress runs (or `egress check --skip-env` elsewhere, e.g. in CI).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from egress.errors import PolicyError
from egress.policy.model import PolicySet, Settings
from egress.policy.secret_refs import SecretRef

__all__ = ["reference_problems"]


def reference_problems(policy: PolicySet, environ: Mapping[str, str] | None = None
                       ) -> list[PolicyError]:
    """Every reference that cannot be read as egress's environment stands."""
    env = os.environ if environ is None else environ
    out: list[PolicyError] = []
    used_backends: set[str] = set()
    for skill in policy.skills.values():
        for cred in skill.credentials.values():
            for use in cred.all_refs():
                used_backends.add(use.ref.scheme)
                message = _ref_problem(use.ref, env)
                if message is not None:
                    out.append(PolicyError(
                        use.source.file, use.source.line,
                        f"skills.{skill.name}.credentials.{cred.name}.{use.field}", message))
    out.extend(_settings_problems(policy.settings, used_backends, env))
    return sorted(out, key=lambda e: (e.file, e.line, e.field))


def _ref_problem(ref: SecretRef, env: Mapping[str, str]) -> str | None:
    if ref.scheme == "env":
        if ref.location not in env:
            return f"environment variable {ref.location} is not set in egress's environment"
        if not env[ref.location]:
            return f"environment variable {ref.location} is empty"
        return None
    if ref.scheme == "file":
        return _file_problem(ref.location)
    return None


def _file_problem(path: str) -> str | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path} does not exist"
    except PermissionError:
        return f"{path}: permission denied (a directory on the way is not searchable)"
    except OSError as exc:
        return f"{path}: cannot stat ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if not os.access(path, os.R_OK):
        return f"{path}: egress (uid {os.geteuid()}) may not read it"
    if st.st_size == 0:
        return f"{path} is empty"
    return None


def _settings_problems(settings: Settings, used: set[str], env: Mapping[str, str]
                       ) -> list[PolicyError]:
    secrets = settings.secrets
    if secrets is None or settings.source is None:
        return []
    file, line = settings.source.file, settings.source.line
    checks: list[tuple[str, str | None, str | None, str | None]] = []  # (where, env, file, ca)
    if secrets.vault is not None and "vault" in used:
        v = secrets.vault
        auth = "settings.secrets.vault.auth"
        checks.append((auth, v.token_env, v.token_file, None))
        if v.approle_secret_id_file is not None:
            checks.append((f"{auth}.approle.secret_id", None, v.approle_secret_id_file, None))
        checks.append(("settings.secrets.vault", None, None, v.ca_file))
    if secrets.onepassword is not None and "op" in used:
        o = secrets.onepassword
        checks.append(("settings.secrets.onepassword", o.token_env, o.token_file, o.ca_file))
    if secrets.doppler is not None and "doppler" in used:
        d = secrets.doppler
        checks.append(("settings.secrets.doppler", d.token_env, d.token_file, d.ca_file))
    out: list[PolicyError] = []
    for where, token_env, token_file, ca_file in checks:
        if token_env is not None and not env.get(token_env, "").strip():
            out.append(PolicyError(file, line, f"{where}.token_env",
                                   f"environment variable {token_env} is not set in egress's "
                                   f"environment: the backend cannot be asked"))
        if token_file is not None and (problem := _file_problem(token_file)) is not None:
            out.append(PolicyError(file, line, f"{where}_file" if where.endswith("secret_id")
                                   else f"{where}.token_file", problem))
        if ca_file is not None and (problem := _file_problem(ca_file)) is not None:
            out.append(PolicyError(file, line, f"{where}.ca_file", problem))
    return out
