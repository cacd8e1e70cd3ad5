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

from egress.errors import SecretError, SecretForbidden, SecretNotFound, SecretUnavailable
from egress.policy.secret_refs import SecretRef
from egress.secrets.base import Secret, SecretInfo

__all__ = ["MAX_SECRET_FILE_BYTES", "EnvBackend", "FileBackend", "read_secret_text"]

MAX_SECRET_FILE_BYTES = 64 * 1024
"""A secret file larger than this is refused: it is almost certainly the wrong file."""


def _expect_scheme(ref: SecretRef, scheme: str) -> None:
    if ref.scheme != scheme:
        raise SecretUnavailable(f"{ref}: the {scheme} backend cannot read {ref.scheme}: references")


class EnvBackend:
    """Reads ``env:NAME`` from a mapping (``os.environ`` unless one is given).

    The mapping is read on every fetch, so a test or embedding process can change it.
    """

    async def describe(self, ref: SecretRef) -> SecretInfo:
        await self.fetch(ref)  # the same errors when it is not set
        return SecretInfo(note="environment variables carry no change time")

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
    """Reads ``file:/PATH``: UTF-8 text with one trailing newline (LF or CRLF) removed."""

    async def describe(self, ref: SecretRef) -> SecretInfo:
        """The file's modification time is when the secret last changed."""
        _expect_scheme(ref, "file")
        try:
            st = os.stat(ref.location)
        except FileNotFoundError as exc:
            raise SecretNotFound(f"{ref}: no such file") from exc
        except PermissionError as exc:
            raise SecretForbidden(f"{ref}: permission denied") from exc
        except OSError as exc:
            raise SecretUnavailable(f"{ref}: cannot stat ({_errno_name(exc)})") from exc
        return SecretInfo(changed_at=st.st_mtime)

    async def fetch(self, ref: SecretRef) -> Secret:
        _expect_scheme(ref, "file")
        text = read_secret_text(ref.location, str(ref))
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith("\n"):
            text = text[:-1]
        if text == "":
            raise SecretNotFound(f"{ref}: the file is empty")
        return Secret(text)

    async def close(self) -> None:
        return None


def read_secret_text(path: str, what: str, *, missing: type[SecretError] = SecretNotFound) -> str:
    """Read a small local UTF-8 file that holds a secret (or a Vault token / secret_id).

    Raises ``missing`` when there is no such regular file, SecretUnavailable when it cannot
    be read; messages start with ``what``. The file is opened non-blocking and must be a
    regular file, so a FIFO or device named by mistake cannot stall the event loop; it is
    small and local, so the read runs inline rather than in a thread.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError as exc:
        raise SecretForbidden(f"{what}: permission denied") from exc
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ENOENT):
            raise missing(f"{what}: no such file") from exc
        raise SecretUnavailable(f"{what}: cannot open ({_errno_name(exc)})") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise missing(f"{what}: not a regular file")
        chunks: list[bytes] = []
        total = 0
        # Bounded: a file growing while we read cannot keep us here.
        while total <= MAX_SECRET_FILE_BYTES:
            chunk = os.read(fd, MAX_SECRET_FILE_BYTES + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise SecretUnavailable(f"{what}: cannot read ({_errno_name(exc)})") from exc
    finally:
        os.close(fd)
    if total > MAX_SECRET_FILE_BYTES:
        raise SecretUnavailable(f"{what}: larger than {MAX_SECRET_FILE_BYTES} bytes")
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SecretUnavailable(f"{what}: the file is not UTF-8 text") from exc


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, "error")
