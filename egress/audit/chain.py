"""Tamper evidence: every audit line is linked to the one before it, and some are signed.

Each line the writer emits gets two fields at its end:

    "seq":  N    one more than the line before (across rotation and restarts)
    "prev": D    digest of the line before: base64url(SHA-256(its bytes, without the newline)),
                 "" for the first line of a chain

So a line that is edited, inserted, deleted or moved breaks the link of the line after it
(`egress audit verify` says which). Someone who rewrites the rest of the file to match
cannot forge the **checkpoints**: some lines also carry

    "key":  K    id of the Ed25519 key that signed (first 16 hex digits of SHA-256(public key))
    "sig":  S    base64url(Ed25519(key, DOMAIN + the line up to and without `,"sig":...`))

A signed line commits, through `prev`, to every line before it. The writer signs the first
line after it starts (a restart is visible as a signed line, the chain continues from the
last line on disk), the first line of a new file after rotation, then every
CHECKPOINT_LINES lines or the first line after CHECKPOINT_SECONDS, whichever comes first; on
shutdown it writes one checkpoint line of its own (`kind: "audit"`, `event: "checkpoint"`)
so the tail is signed too. The private key lives in DATA_DIR/audit-key.pem (0600, made on
first start); `egress audit pubkey` prints the public half, to keep somewhere else.

The fields go at the end of the line, so a line's bytes are: the record's JSON, then
`,"seq":...,"prev":"..."` (and `,"key":"...","sig":"..."`), then `}`. A receiver that
stores the line as it arrived (syslog MSG, a JSON Lines body, Loki's line, OCSF's
`raw_data`) can be verified the same way.

What it protects against: edits by anyone who cannot read the key (a skill that got code
execution as another user, a log pipeline, a backup). Root on the host can read the key and
re-sign; lines shipped off the host (egress/audit/ship/) and the public key kept elsewhere
are the answer to that.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CHECKPOINT_LINES", "CHECKPOINT_SECONDS", "DOMAIN", "KEY_FILE", "ChainState",
           "Signer", "advance", "b64", "digest", "key_id", "last_line", "link", "signed_body",
           "unb64"]

KEY_FILE = "audit-key.pem"
DOMAIN = b"egress-audit-checkpoint-v1\n"
CHECKPOINT_LINES = 1000
CHECKPOINT_SECONDS = 60.0
_SIG = ',"sig":"'


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def digest(line: bytes) -> str:
    """The `prev` a line's successor carries: base64url SHA-256 of the line (no newline)."""
    return b64(hashlib.sha256(line.rstrip(b"\n")).digest())


def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


@dataclass
class ChainState:
    """Where the chain stands: the last line's sequence number and digest."""

    seq: int = 0
    prev: str = ""


def link(body: str, state: ChainState, signer: Signer | None = None) -> str:
    """`body` (one JSON object, no newline) with the chain fields added after `state`, signed
    if `signer` is given. `state` is not changed: `advance` it once the line is written."""
    line = f'{body[:-1]},"seq":{state.seq + 1},"prev":"{state.prev}"'
    if signer is None:
        return line + "}"
    line += f',"key":"{signer.key_id}"'
    return line + f'{_SIG}{b64(signer.sign(DOMAIN + (line + "}").encode()))}"' + "}"


def advance(state: ChainState, line: str) -> None:
    """Move `state` past `line` (as `link` made it)."""
    state.seq, state.prev = state.seq + 1, digest(line.encode())


def signed_body(line: str) -> tuple[str, bytes] | None:
    """(what was signed, the signature) of a signed line, None for an unsigned one."""
    if not line.endswith('"}'):
        return None
    head, sep, tail = line.rpartition(_SIG)
    if not sep or '"' in tail[:-2]:
        return None
    try:
        return head + "}", unb64(tail[:-2])
    except ValueError:
        return None


class Signer:
    """The Ed25519 key checkpoints are signed with (DATA_DIR/audit-key.pem)."""

    def __init__(self, private: Any) -> None:
        from cryptography.hazmat.primitives import serialization

        self._private = private
        self.public_raw: bytes = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = key_id(self.public_raw)

    @classmethod
    def load_or_create(cls, data_dir: str | os.PathLike[str]) -> Signer:
        """Read the key, or make one (0600) if there is none yet."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        path = Path(data_dir) / KEY_FILE
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it first: use theirs
                return cls.load_or_create(data_dir)
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            return cls(key)
        loaded = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        return cls(loaded)

    def sign(self, data: bytes) -> bytes:
        signature: bytes = self._private.sign(data)
        return signature

    def public_pem(self) -> str:
        from cryptography.hazmat.primitives import serialization

        pem: bytes = self._private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return pem.decode("ascii")


def last_line(paths: list[Path]) -> tuple[ChainState, bool]:
    """Where the chain left off in the newest non-empty file of `paths` (newest first):
    the state after its last line, and whether that file ends in the middle of a line (a
    torn write at a crash). No file: a new chain."""
    for path in paths:
        try:
            with open(path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                if size == 0:
                    continue
                fh.seek(max(0, size - (1 << 20)))
                tail = fh.read()
        except OSError:
            continue
        torn = not tail.endswith(b"\n")
        lines = [line for line in tail.split(b"\n") if line.strip()]
        if not lines:
            continue
        seq = 0
        for line in reversed(lines[-64:]):  # a torn or foreign last line: the seq before it
            try:
                value = json.loads(line).get("seq")
            except (ValueError, AttributeError):
                continue
            if isinstance(value, int) and not isinstance(value, bool):
                seq = value
                break
        return ChainState(seq, digest(lines[-1])), torn
    return ChainState(), False
