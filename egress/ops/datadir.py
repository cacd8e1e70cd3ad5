"""Where egress keeps its state when no --data-dir is given (tokens, CA, audit log), and the
copies of files it must re-read when their content changes (`settings.upstream_ca`)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

__all__ = ["default_data_dir", "staged_copy"]

MAX_STAGED = 4 * 2**20  # a CA bundle larger than this is not a CA bundle


def default_data_dir() -> Path:
    """$EGRESS_DATA_DIR, else the per-user state directory ($XDG_STATE_HOME/egress)."""
    env = os.environ.get("EGRESS_DATA_DIR")
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "egress"


def staged_copy(data_dir: Path, path: str | None, kind: str = "upstream-ca") -> str | None:
    """A copy of `path` named by its content: DATA_DIR/<kind>/<sha256>.pem.

    mitmproxy caches a TLS context per CA file *name*, so an edited CA bundle under the same
    name would not be read again; a name per content makes a reload see every change. Raises
    ValueError when the file cannot be read.
    """
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_STAGED + 1)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it ({exc.strerror})") from None
    if len(data) > MAX_STAGED:
        raise ValueError(f"{path}: larger than {MAX_STAGED} bytes")
    directory = data_dir / kind
    target = directory / f"{hashlib.sha256(data).hexdigest()}.pem"
    if not target.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    return str(target)
