"""Where imported keys go: files in the data directory, or OpenBao/Vault.

Files: DATA_DIR/secrets/<skill>/<NAME>, mode 0600 in 0700 folders, read by egress through a
`file:` reference. Vault: `vault:MOUNT/PREFIX/<skill>#<NAME>` (KV v2, one secret per skill,
one field per key), written with the address and token of the importing shell:
BAO_ADDR or VAULT_ADDR, and BAO_TOKEN or VAULT_TOKEN.

A key already stored with the same value is not written again, so importing twice adds no
Vault versions and touches no file.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from egress.errors import ConfigError, SecretNotFound
from egress.openclaw.plan import StoredKey
from egress.policy.secret_refs import parse_secret_ref
from egress.policy.secret_settings import VaultSettings
from egress.secrets.vault import VaultBackend

__all__ = [
    "check_vault_location",
    "file_ref",
    "store_keys",
    "vault_connection",
    "vault_ref",
]

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def file_ref(data_dir: Path, skill: str, name: str) -> str:
    """`file:` reference of a key kept in DATA_DIR/secrets/<skill>/<NAME>."""
    return f"file:{data_dir.resolve() / 'secrets' / _safe(skill) / _safe(name)}"


def vault_ref(location: str, skill: str, name: str) -> str:
    """`vault:` reference of a key kept at LOCATION/<skill>, field NAME."""
    return f"vault:{location}/{_safe(skill)}#{_safe(name)}"


def store_keys(keys: Sequence[StoredKey], environ: Mapping[str, str] | None = None) -> int:
    """Write each key where its reference points (file: or vault:); skip keys already there.

    Returns how many were written. Raises ConfigError or SecretError; a failure leaves the
    keys written so far in place (writing them again is harmless).
    """
    for key in keys:
        if not key.ref.startswith(("file:", "vault:")):
            raise ConfigError(f"{key.ref}: the import can store keys in file: or vault: "
                              "references only")
    files = [k for k in keys if k.ref.startswith("file:")]
    vaults = [k for k in keys if k.ref.startswith("vault:")]
    written = 0
    for key in files:
        path = Path(parse_secret_ref(key.ref).location)
        if not _same_file_content(path, key.value.reveal()):
            _write_secret_file(path, key.value.reveal())
            written += 1
    if vaults:
        written += asyncio.run(_put_vault(vaults, vault_connection(environ), environ))
    return written


def _safe(name: str) -> str:
    if not _SEGMENT.match(name):
        raise ConfigError(f"{name!r} cannot name a stored secret (letters, digits, . _ -)")
    return name


def _same_file_content(path: Path, value: str) -> bool:
    try:
        current = path.read_bytes()
    except OSError:
        return False
    return hmac.compare_digest(current, (value + "\n").encode())


def _write_secret_file(path: Path, value: str) -> None:
    for folder in (path.parent.parent, path.parent):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
    # mkstemp creates the file 0600 from the start: the key is never readable by others.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write((value + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_vault_location(location: str) -> str:
    """`--to-vault MOUNT/PREFIX`, checked and without surrounding slashes."""
    location = location.strip().strip("/")
    if not location or not all(_SEGMENT.match(p) for p in location.split("/")):
        raise ConfigError(f"--to-vault {location!r}: write MOUNT/PREFIX, e.g. secret/openclaw")
    return location


def vault_connection(environ: Mapping[str, str] | None = None) -> VaultSettings:
    """OpenBao/Vault address and token variable from the environment. Raises ConfigError."""
    env = os.environ if environ is None else environ
    addr = env.get("BAO_ADDR") or env.get("VAULT_ADDR")
    if not addr:
        raise ConfigError("storing keys in OpenBao/Vault needs its address in BAO_ADDR or "
                          "VAULT_ADDR")
    token_env = next((n for n in ("BAO_TOKEN", "VAULT_TOKEN") if env.get(n)), None)
    if token_env is None:
        raise ConfigError("storing keys in OpenBao/Vault needs a token allowed to write "
                          "there, in BAO_TOKEN or VAULT_TOKEN")
    return VaultSettings(addr=addr, token_env=token_env)


async def _put_vault(keys: Sequence[StoredKey], settings: VaultSettings,
                     environ: Mapping[str, str] | None) -> int:
    vault = VaultBackend(settings, environ=environ)
    written = 0
    try:
        for key in keys:
            ref = parse_secret_ref(key.ref)
            try:
                if await vault.fetch(ref) == key.value:
                    continue
            except SecretNotFound:
                pass
            await vault.write(ref, key.value)
            written += 1
    finally:
        await vault.close()
    return written
