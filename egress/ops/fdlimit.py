"""File descriptors: raise the soft limit to the hard one at start; say how close egress is.

Every client connection costs egress one descriptor, every passthrough tunnel two (client and
upstream). A soft `RLIMIT_NOFILE` of 1024, still common, would cap egress near 500 tunnels
although the hard limit (often 524288 or more under systemd) allows far more; past it, accepts
fail with EMFILE. So `egress serve` raises the soft limit to the hard one when it starts, and
/readyz and /metrics report descriptors open against the limit.
"""

from __future__ import annotations

import logging
import os
import resource
import sys

__all__ = ["OPEN_MAX_DARWIN", "FileUse", "file_use", "raise_nofile_limit"]

log = logging.getLogger("egress")

# macOS reports RLIM_INFINITY as the hard limit but refuses a soft limit above OPEN_MAX.
OPEN_MAX_DARWIN = 10240


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        target = OPEN_MAX_DARWIN if sys.platform == "darwin" else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
        return soft, hard
    return target, hard


class FileUse:
    """Descriptors open and the soft limit, read when asked (`file_use`)."""

    __slots__ = ("limit", "open")

    def __init__(self, open_: int, limit: int) -> None:
        self.open = open_
        self.limit = limit

    @property
    def ratio(self) -> float:
        return self.open / self.limit if self.limit > 0 else 0.0


def file_use() -> FileUse | None:
    """Descriptors this process holds open against its soft limit (None where the platform
    does not say: no /proc/self/fd or /dev/fd)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            count = len(os.listdir(directory)) - 1  # the listing's own descriptor
        except OSError:
            continue
        limit = soft if soft != resource.RLIM_INFINITY else 1 << 31
        return FileUse(max(0, count), int(limit))
    return None
