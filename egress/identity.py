"""Skill identity: proxy credentials in, skill name out.

A skill authenticates with `Proxy-Authorization: Basic base64(SKILL:TOKEN)`. Tokens are 256
random bits, shown once when issued; the data directory keeps only their SHA-256 (a fast hash
is right here: the tokens carry full entropy, so there is nothing for a slow hash to protect).
Checks compare digests with hmac.compare_digest and do the same work for unknown skills.

The store re-reads its file when the file changes, so `egress token revoke` in another process
takes effect on the next request without a restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from egress.errors import IdentityError

__all__ = ["TokenInfo", "TokenStore", "parse_proxy_authorization"]

TOKEN_PREFIX = "egr_"
_FILE = "tokens.json"
_DUMMY = hashlib.sha256(b"egress: no such skill").hexdigest()
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def parse_proxy_authorization(value: str | None) -> tuple[str, str] | None:
    """(skill, token) from a `Proxy-Authorization` value, or None if absent or malformed."""
    if not value:
        return None
    scheme, _, param = value.strip().partition(" ")
    if scheme.lower() != "basic" or not param:
        return None
    try:
        decoded = base64.b64decode(param.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII input to b64decode
        return None
    skill, sep, token = decoded.partition(":")
    if not sep or not skill or not token:
        return None
    return skill, token


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenInfo:
    skill: str
    token_id: str  # first characters of the hash: lets people tell tokens apart, reveals nothing
    created: str


class TokenStore:
    """Token hashes in DATA_DIR/tokens.json, re-read whenever the file changes."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.path = Path(data_dir) / _FILE
        self._hashes: dict[str, dict[str, str]] = {}
        self._stamp: tuple[int, int, int] | None = None
        self.error: str | None = None

    # -- checking (hot path) -------------------------------------------------------------
    def verify(self, skill: str, token: str) -> bool:
        self.refresh()
        entry = self._hashes.get(skill)
        expected = entry["sha256"] if entry else _DUMMY
        ok = hmac.compare_digest(_digest(token), expected)
        return ok and entry is not None

    def refresh(self) -> None:
        """Re-read tokens.json if it changed since the last look (cheap: one stat)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._hashes, self._stamp = {}, None
            return
        except OSError:
            # Unreadable store: keep no tokens rather than old ones (fail closed).
            self._hashes, self._stamp = {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            try:
                self._hashes = self._read()
                self.error = None
            except IdentityError as exc:
                # A corrupt store authenticates nobody (fail closed) until it is fixed.
                self._hashes, self.error = {}, str(exc)
            self._stamp = stamp

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            tokens = data["tokens"]
            if not isinstance(tokens, dict):
                raise TypeError("tokens is not a mapping")
            out = {str(k): dict(v) for k, v in tokens.items()}
            for skill, entry in out.items():
                # verify() must never raise: a malformed entry makes the whole store corrupt.
                if not _SHA256_HEX.fullmatch(str(entry.get("sha256", ""))):
                    raise TypeError(f"entry {skill!r} has no valid sha256")
            return out
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IdentityError(f"{self.path}: unreadable token store ({exc})") from exc

    # -- managing (CLI) ------------------------------------------------------------------
    def issue(self, skill: str) -> str:
        tokens = self._read()
        if skill in tokens:
            raise IdentityError(
                f"skill {skill!r} already has a token; use `egress token rotate {skill}`"
            )
        return self._put(tokens, skill)

    def rotate(self, skill: str) -> str:
        tokens = self._read()
        if skill not in tokens:
            raise IdentityError(f"skill {skill!r} has no token; use `egress token issue {skill}`")
        return self._put(tokens, skill)

    def revoke(self, skill: str) -> None:
        tokens = self._read()
        if tokens.pop(skill, None) is None:
            raise IdentityError(f"skill {skill!r} has no token to revoke")
        self._write(tokens)

    def list(self) -> list[TokenInfo]:
        return [
            TokenInfo(skill=s, token_id=e["sha256"][:8], created=e.get("created", ""))
            for s, e in sorted(self._read().items())
        ]

    def _put(self, tokens: dict[str, dict[str, str]], skill: str) -> str:
        if ":" in skill or not skill or not skill.isprintable():
            raise IdentityError(f"{skill!r} cannot be a skill name (no ':' or control characters)")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        tokens[skill] = {"sha256": _digest(token), "created": created}
        self._write(tokens)
        return token

    def _write(self, tokens: dict[str, dict[str, str]]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        body = json.dumps({"version": 1, "tokens": tokens}, indent=2, sort_keys=True)
        # Write-then-rename so a running proxy never reads half a file.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tokens.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(body + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
