"""Checking the hash chain and the signed checkpoints of audit lines (`egress audit verify`).

Input is lines as some store kept them: the audit files themselves, or what a receiver
stored. From each line the audit line is taken as it was written: the line itself, or the
string in a JSON wrapper's `raw_data` (OCSF), `msg` (rsyslog's JSON), `line` (Loki) or
`message`, or the text from the first `{"v":` on (a syslog file with its own prefix).

Every line must follow the one before it: `seq` one more, `prev` its digest. Where that
fails, the finding says what happened, as far as the lines can tell:

    edited      the line's digest is not what the next line recorded (or its signature fails)
    deleted     sequence numbers are missing and appear nowhere in the input
    reordered   a line is out of sequence, and the missing number appears elsewhere
    inserted    a line repeats a used sequence number with other content, or has no chain
    duplicate   the same line twice (a receiver that got a batch again after an outage)
    unreadable  not a JSON record: torn by a crash, or edited
    signature   a checkpoint's signature does not verify: the line or one before it changed

Signed lines are checked with the public keys given (the key in DATA_DIR by default); a
signed line commits to every line before it. Pure, apart from reading keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from egress.audit.chain import DOMAIN, digest, key_id, signed_body

__all__ = ["Finding", "Line", "Verification", "extract", "public_key", "verify_lines"]

_WRAPPERS = ("raw_data", "msg", "line", "message")


@dataclass(frozen=True)
class Line:
    where: str  # "file:line"
    text: str  # the line as stored (no newline)


@dataclass(frozen=True)
class Finding:
    where: str
    kind: str  # edited | deleted | reordered | inserted | duplicate | unreadable | signature
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.kind}: {self.message}"


@dataclass
class Verification:
    lines: int = 0  # audit lines read
    first_seq: int | None = None
    last_seq: int | None = None
    unchained: int = 0  # lines before the chain started (written by an older egress)
    chains: int = 0  # chain starts (prev "") seen
    signatures: int = 0  # signed lines whose signature verified
    unchecked: int = 0  # signed lines with no public key to check them
    keys: set[str] = field(default_factory=set)
    unsigned_tail: int = 0  # lines after the last verified signature
    findings: list[Finding] = field(default_factory=list)
    anchored: bool = False  # the first line continues a chain that started before the input

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> dict[str, Any]:
        return {"ok": self.ok, "lines": self.lines, "first_seq": self.first_seq,
                "last_seq": self.last_seq, "unchained": self.unchained, "chains": self.chains,
                "signatures": self.signatures, "unchecked_signatures": self.unchecked,
                "keys": sorted(self.keys), "unsigned_tail": self.unsigned_tail,
                "starts_mid_chain": self.anchored,
                "findings": [{"where": f.where, "kind": f.kind, "message": f.message}
                             for f in self.findings]}


def extract(text: str) -> tuple[str, dict[str, Any]] | None:
    """The audit line inside a stored line, and its fields; None if there is none."""
    obj = _chained(text)
    if obj is not None:
        return text, obj
    try:
        outer = json.loads(text)
    except ValueError:
        outer = None
    if isinstance(outer, dict):
        for key in _WRAPPERS:
            inner = outer.get(key)
            if isinstance(inner, str):
                obj = _chained(inner)
                if obj is not None:
                    return inner, obj
    start = text.find('{"v":')
    if start > 0:
        obj = _chained(text[start:])
        if obj is not None:
            return text[start:], obj
    return None


def _chained(text: str) -> dict[str, Any] | None:
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    seq, prev = obj.get("seq"), obj.get("prev")
    if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 and isinstance(prev, str):
        return obj
    return None


def public_key(data: bytes) -> tuple[str, Any]:
    """(key id, key) from a PEM public or private key, or the base64 of the raw 32 bytes.
    Raises ValueError for anything else."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    text = data.strip()
    key: Any
    try:
        if b"PRIVATE KEY" in text:
            private = serialization.load_pem_private_key(text, password=None)
            if not isinstance(private, Ed25519PrivateKey):
                raise ValueError("not an Ed25519 key")
            key = private.public_key()
        elif text.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(text)
        else:
            import base64

            raw = base64.b64decode(text.split()[-1] + b"=" * (-len(text.split()[-1]) % 4),
                                   altchars=b"-_" if b"-" in text or b"_" in text else None)
            key = Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"not an Ed25519 public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key_id(raw), key


@dataclass
class _Entry:
    where: str
    text: str
    line: str | None  # the audit line, None when unreadable or unchained
    obj: dict[str, Any] | None


def verify_lines(lines: Iterable[Line], keys: Mapping[str, Any], *,
                 sort: bool = False) -> Verification:
    """Check the chain and signatures of `lines` (in order; `sort`: by seq first, for stores
    that keep lines by time, such as Loki)."""
    entries: list[_Entry] = []
    for item in lines:
        if not item.text.strip():
            continue
        found = extract(item.text)
        entries.append(_Entry(item.where, item.text, *(found or (None, None))))
    if sort:
        entries.sort(key=lambda e: e.obj["seq"] if e.obj is not None else 0)
    positions: dict[int, list[int]] = {}
    for i, e in enumerate(entries):
        if e.obj is not None:
            positions.setdefault(e.obj["seq"], []).append(i)
    result = Verification()
    _Walk(result, entries, positions, keys).run()
    return result


class _Walk:
    def __init__(self, result: Verification, entries: list[_Entry],
                 positions: dict[int, list[int]], keys: Mapping[str, Any]) -> None:
        self.r, self.entries, self.positions, self.keys = result, entries, positions, keys
        self.high: int | None = None  # the highest seq so far (of the current chain)
        self.prev_digest: str | None = None  # of the line just before, whatever it was
        self.prev_where: str | None = None
        self.seen: dict[int, tuple[str, str]] = {}  # seq -> (digest, where) of its first line
        self.late: set[int] = set()  # seqs reported missing here that appear further on

    def run(self) -> None:
        for i, e in enumerate(self.entries):
            self.r.lines += 1
            if e.obj is None or e.line is None:
                self._foreign(e)
            else:
                self._chained(i, e, e.line, e.obj)
            self.prev_digest, self.prev_where = digest((e.line or e.text).encode()), e.where

    def _foreign(self, e: _Entry) -> None:
        try:
            obj = json.loads(e.text)
        except ValueError:
            obj = None
        self.r.unsigned_tail += 1
        if self.high is None and isinstance(obj, dict):
            self.r.unchained += 1  # before the chain began: an older egress wrote it
        elif isinstance(obj, dict):
            self._find(e.where, "inserted", "a record without the chain's `seq` and `prev`")
        else:
            self._find(e.where, "unreadable", "not a JSON audit record (torn by a crash, or "
                                              "edited)")

    def _chained(self, i: int, e: _Entry, line: str, obj: dict[str, Any]) -> None:
        seq, prev = obj["seq"], obj["prev"]
        d = digest(line.encode())
        r = self.r
        if r.first_seq is None:
            r.first_seq = seq
        if prev == "":
            r.chains += 1
        high = self.high
        if high is None or prev == "":
            # The first line read, or a new chain (an egress that could not read where the
            # last one ended, e.g. audit to stdout): nothing before it to check against,
            # except the line physically before it when it claims to follow one.
            if high is None:
                r.anchored = prev != ""
                if self.prev_digest is not None and prev not in ("", self.prev_digest):
                    self._find(self.prev_where or e.where, "edited",
                               f"its digest is not the `prev` recorded by {e.where}")
            self.seen, self.late, high = {}, set(), seq - 1
        expected = self.seen.get(seq - 1)
        if seq == high + 1:
            if expected is not None and prev != expected[0]:
                self._find(expected[1], "edited",
                           f"its digest is not the `prev` recorded by {e.where} (seq {seq})")
        elif seq > high + 1:
            missing = range(high + 1, seq)
            later = [m for m in missing if m in self.positions]
            if later:
                at = self.entries[self.positions[later[0]][0]].where
                self._find(e.where, "reordered", f"seq {seq} where seq {high + 1} belongs "
                                                 f"(seq {later[0]} is at {at})")
                self.late.update(later)
            elif prev == self.seen.get(high, ("",))[0]:
                self._find(e.where, "edited", f"seq {seq} follows seq {high} and its `prev` "
                                              f"matches it: the seq was changed")
            else:
                gap = f"seq {missing[0]}" if len(missing) == 1 else \
                    f"seq {missing[0]}..{missing[-1]} ({len(missing)} lines)"
                self._find(e.where, "deleted", f"{gap} missing before this line")
        elif seq in self.seen:
            if self.seen[seq][0] == d:
                self._find(e.where, "duplicate", f"seq {seq} again, the same line as "
                                                 f"{self.seen[seq][1]}")
            else:
                self._find(e.where, "inserted", f"seq {seq} again with other content than "
                                                f"{self.seen[seq][1]}")
        elif seq not in self.late:
            self._find(e.where, "reordered", f"seq {seq} after seq {high}")
        self._signature(e, line, obj)
        self.seen.setdefault(seq, (d, e.where))
        self.high = max(high, seq)
        r.last_seq = seq

    def _signature(self, e: _Entry, line: str, obj: dict[str, Any]) -> None:
        r = self.r
        if "sig" not in obj:
            r.unsigned_tail += 1
            return
        kid = obj.get("key")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        signed = signed_body(line)
        if key is None or signed is None:
            if signed is None:
                self._find(e.where, "signature", "a `sig` that is not where egress writes it")
            else:
                r.unchecked += 1
                r.keys.add(str(kid))
            r.unsigned_tail += 1
            return
        from cryptography.exceptions import InvalidSignature

        body, signature = signed
        try:
            key.verify(signature, DOMAIN + body.encode())
        except InvalidSignature:
            self._find(e.where, "signature", "the checkpoint's signature does not verify: this "
                                             "line or one before it was changed")
            r.unsigned_tail += 1
            return
        r.signatures += 1
        r.keys.add(kid)  # type: ignore[arg-type]
        r.unsigned_tail = 0

    def _find(self, where: str, kind: str, message: str) -> None:
        if not any(f.where == where for f in self.r.findings[-3:]):  # one finding a line
            self.r.findings.append(Finding(where, kind, message))
