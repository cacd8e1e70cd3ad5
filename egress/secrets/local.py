"""Secrets from the egress process itself: ``env:NAME`` and ``file:/PATH``.

Both are for small deployments (a systemd credential, a Docker/Kubernetes secret file, a
variable set by the service manager). They follow the SecretBackend contract: an empty
value counts as missing, so egress never injects an empty credential.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping

from egress.errors import SecretNotFound, SecretUnavailable
from egress.secrets.base import Secret, SecretRef

__all__ = ["EnvBackend", "FileBackend", "MAX_SECRET_FILE_BYTES"]

MAX_SECRET_FILE_BYTES = 64 * 1024
"""A secret file larger than this is refused: it is almost certainly the wrong file."""


def _expect_scheme(ref: SecretRef, scheme: str) -> None:
    if ref.scheme != scheme:
        raise SecretUnavailable(f"{ref}: the {scheme} backend cannot read {ref.scheme}: references")


class EnvBackend:
    """Reads ``env:NAME`` from a mapping (``os.environ`` unless one is given).

    The mapping is read on every fetch, so a test or embedding process can change it.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ: Mapping[str, str] = os.environ if environ is None else environ

    async def fetch(self, ref: SecretRef) -> Secret:
        _expect_scheme(ref, "env")
        value = self._environ.get(ref.location)
        if value is None:
            raise SecretNotFound(f"{ref}: environment variable {ref.location} is not set")
        if value == "":
            raise SecretNotFound(f"{ref}: environment variable {ref.location} is empty")
        return Secret(value)

    async def close(self) -> None:
        return None


class FileBackend:
    """Reads ``file:/PATH``: UTF-8 text with one trailing newline (LF or CRLF) removed.

    The file is opened non-blocking and must be a regular file, so a FIFO or device named
    by mistake cannot stall the event loop. Files are small and local, so the read itself
    runs inline rather than in a thread.
    """

    async def fetch(self, ref: SecretRef) -> Secret:
        _expect_scheme(ref, "file")
        raw = _read_small_file(ref)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SecretUnavailable(f"{ref}: the file is not UTF-8 text") from exc
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith("\n"):
            text = text[:-1]
        if text == "":
            raise SecretNotFound(f"{ref}: the file is empty")
        return Secret(text)

    async def close(self) -> None:
        return None


def _read_small_file(ref: SecretRef) -> bytes:
    try:
        fd = os.open(ref.location, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise SecretNotFound(f"{ref}: no such file") from exc
    except PermissionError as exc:
        raise SecretUnavailable(f"{ref}: permission denied") from exc
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ENOENT):
            raise SecretNotFound(f"{ref}: no such file") from exc
        raise SecretUnavailable(f"{ref}: cannot open ({errno.errorcode.get(exc.errno or 0, 'error')})") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretNotFound(f"{ref}: not a regular file")
        if info.st_size > MAX_SECRET_FILE_BYTES:
            raise SecretUnavailable(f"{ref}: larger than {MAX_SECRET_FILE_BYTES} bytes")
        chunks: list[bytes] = []
        total = 0
        # Bounded: a file growing while we read cannot keep us here.
        while total <= MAX_SECRET_FILE_BYTES:
            chunk = os.read(fd, MAX_SECRET_FILE_BYTES + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > MAX_SECRET_FILE_BYTES:
            raise SecretUnavailable(f"{ref}: larger than {MAX_SECRET_FILE_BYTES} bytes")
        return b"".join(chunks)
    except OSError as exc:
        raise SecretUnavailable(f"{ref}: cannot read ({errno.errorcode.get(exc.errno or 0, 'error')})") from exc
    finally:
        os.close(fd)
