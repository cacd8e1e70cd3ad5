"""`egress audit pubkey` and `egress audit verify [FILES...]`: the log's tamper evidence.

    egress audit pubkey > egress-audit.pub       the public key checkpoints are signed with
    egress audit verify                          DATA_DIR/audit.jsonl.N ... audit.jsonl
    egress audit verify --pubkey egress-audit.pub received.log   what a receiver stored

verify exits 0 when every line follows the one before it and every signature verifies,
1 with the first finding (edited, deleted, reordered, inserted, ...) otherwise, 2 when
there is nothing to read. See egress/audit/chain.py and egress/audit/verify.py.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from egress.cli.common import add_data_dir, add_json, data_dir
from egress.errors import ConfigError

_ROTATED = re.compile(r"^(.*)\.(\d+)$")


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="audit log integrity: pubkey, verify",
                       description="The audit log's hash chain and signed checkpoints.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    k = verbs.add_parser("pubkey", help="print the public key that signs audit checkpoints",
                         description="Print the Ed25519 public key (PEM) that signs the audit "
                                     "log's checkpoints; keep a copy off this host to verify "
                                     "with. Makes the key pair if there is none yet.")
    add_data_dir(k)
    add_json(k)
    k.set_defaults(run=run_pubkey)
    v = verbs.add_parser(
        "verify", help="check the audit log's hash chain and signatures",
        description="Check that no audit line was edited, inserted, deleted or reordered, and "
                    "that signed checkpoints verify. FILES default to the data directory's "
                    "audit.jsonl and its rotated files; they may be what a receiver stored "
                    "(syslog MSG, JSON Lines, OCSF raw_data, Loki lines). - reads stdin.")
    v.add_argument("files", nargs="*", metavar="FILE")
    v.add_argument("--pubkey", action="append", default=[], metavar="FILE",
                   help="public key to check signatures with (from `egress audit pubkey`); "
                        "repeatable. Default: the data directory's key")
    v.add_argument("--sort", action="store_true",
                   help="order lines by their sequence number first (for stores that keep "
                        "lines by time, such as Loki)")
    v.add_argument("--all", action="store_true", help="list every finding, not the first")
    add_data_dir(v)
    add_json(v)
    v.set_defaults(run=run_verify)


def run_pubkey(args: argparse.Namespace) -> int:
    from egress.audit.chain import Signer, b64

    try:
        signer = Signer.load_or_create(data_dir(args))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read or make the audit key in {data_dir(args)}: "
                          f"{type(exc).__name__}") from None
    if args.json:
        print(json.dumps({"key": signer.key_id, "public_key": b64(signer.public_raw),
                          "pem": signer.public_pem()}))
    else:
        sys.stdout.write(signer.public_pem())
        print(f"key id {signer.key_id}", file=sys.stderr)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from egress.audit.query import audit_files
    from egress.audit.verify import verify_lines

    keys = _keys(args)
    files = [Path(f) for f in args.files] if args.files else audit_files(data_dir(args))
    if not files:
        print(f"egress: no audit files in {data_dir(args)}", file=sys.stderr)
        return 2
    result = verify_lines(_lines(_ordered(files)), keys, sort=args.sort)
    if args.json:
        print(json.dumps(result.summary()))
        return 0 if result.ok else 1
    if result.lines == 0:
        print("egress: no audit lines to verify", file=sys.stderr)
        return 2
    shown = result.findings if args.all else result.findings[:1]
    for finding in shown:
        print(str(finding))
    if len(result.findings) > len(shown):
        print(f"({len(result.findings) - len(shown)} more findings after it; --all lists them)")
    seqs = (f"seq {result.first_seq}..{result.last_seq}" if result.first_seq is not None
            else "no chained lines")
    status = "verified" if result.ok else "FAILED"
    print(f"audit log {status}: {result.lines} lines ({seqs}), {result.signatures} signatures "
          f"verified" + (f" (key {', '.join(sorted(result.keys))})" if result.keys else ""),
          file=sys.stderr)
    notes = []
    if result.unchecked:
        notes.append(f"{result.unchecked} signatures NOT checked: no public key for them "
                     f"(--pubkey)")
    if result.unsigned_tail:
        notes.append(f"the last {result.unsigned_tail} lines are after the last verified "
                     f"signature: the chain shows an edit of any but the last of them; an "
                     f"edit of the last line, or lines cut from the end, show only against "
                     f"the next checkpoint or a shipped copy")
    if result.anchored:
        notes.append("the first line continues a chain whose start was not given (rotated "
                     "away, or another file)")
    if result.unchained:
        notes.append(f"{result.unchained} lines before the chain began (an older egress)")
    for note in notes:
        print(f"  {note}", file=sys.stderr)
    return 0 if result.ok else 1


def _keys(args: argparse.Namespace) -> dict[str, Any]:
    from egress.audit.chain import KEY_FILE
    from egress.audit.verify import public_key

    sources: list[tuple[str, bytes]] = []
    for name in args.pubkey:
        try:
            sources.append((name, Path(name).read_bytes()))
        except OSError as exc:
            raise ConfigError(f"--pubkey {name}: cannot read ({exc.strerror})") from None
    if not args.pubkey:
        own = data_dir(args) / KEY_FILE
        if own.is_file():
            try:
                sources.append((str(own), own.read_bytes()))
            except OSError:
                pass
    keys: dict[str, Any] = {}
    for name, data in sources:
        try:
            kid, key = public_key(data)
        except ValueError as exc:
            raise ConfigError(f"--pubkey {name}: {exc}") from None
        keys[kid] = key
    return keys


def _ordered(files: list[Path]) -> list[Path]:
    """Files as given, except that rotated audit files (NAME.N) go oldest first, before NAME."""
    def key(path: Path) -> tuple[str, int]:
        match = _ROTATED.match(path.name)
        base = match.group(1) if match else path.name
        return (str(path.with_name(base)), -int(match.group(2)) if match else 0)

    bases = {str(p.with_name(_ROTATED.match(p.name).group(1))) for p in files  # type: ignore[union-attr]
             if _ROTATED.match(p.name)}
    if not bases:
        return files
    return sorted(files, key=key)


def _lines(files: list[Path]) -> Iterator[Any]:
    from egress.audit.verify import Line

    for path in files:
        try:
            fh = sys.stdin.buffer if str(path) == "-" else open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
        with fh:
            for n, raw in enumerate(fh, 1):
                yield Line(f"{path}:{n}", raw.decode("utf-8", "replace").rstrip("\r\n"))
