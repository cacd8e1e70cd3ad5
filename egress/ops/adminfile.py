"""DATA_DIR/admin.json: where the running egress's admin endpoint is, for `egress approvals`.

`egress serve` writes it once the admin endpoint listens and removes it when it stops:

    {"url": "http://127.0.0.1:8081", "pid": 4242, "token": "..."}

`token` is there only when no admin token is configured: egress then makes one for the run,
needed for approvals and the console (never open without a token: a skill on the same host
could approve its own requests). The file is written with mode 0600 and renamed into place,
so a reader sees a whole file or none; whoever can read it can decide approvals, so the data
directory must not be readable by skills.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["ADMIN_FILE", "read_admin_record", "remove_admin_record", "write_admin_record"]

ADMIN_FILE = "admin.json"


def write_admin_record(data_dir: Path, *, url: str, token: str | None) -> Path:
    path = data_dir / ADMIN_FILE
    record: dict[str, Any] = {"url": url, "pid": os.getpid()}
    if token is not None:
        record["token"] = token
    tmp = data_dir / f".{ADMIN_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def read_admin_record(data_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((data_dir / ADMIN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("url"), str) else None


def remove_admin_record(data_dir: Path) -> None:
    """Remove the record if this process wrote it (another egress may have replaced it)."""
    record = read_admin_record(data_dir)
    if record is not None and record.get("pid") == os.getpid():
        with contextlib.suppress(OSError):
            (data_dir / ADMIN_FILE).unlink()
