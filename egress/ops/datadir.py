"""Where egress keeps its state when no --data-dir is given (tokens, CA, audit log)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_data_dir"]


def default_data_dir() -> Path:
    """$EGRESS_DATA_DIR, else the per-user state directory ($XDG_STATE_HOME/egress)."""
    env = os.environ.get("EGRESS_DATA_DIR")
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "egress"
