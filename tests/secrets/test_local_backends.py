"""env: and file: backends on real environment mappings and real files."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from egress.errors import SecretError, SecretNotFound, SecretUnavailable
from egress.policy.secret_refs import SecretRef, parse_secret_ref
from egress.secrets import EnvBackend, FileBackend
from egress.secrets.local import MAX_SECRET_FILE_BYTES


@pytest.mark.parametrize(
    "environ, name, outcome",
    [
        pytest.param({"STRIPE": "sk_1"}, "STRIPE", "sk_1", id="set variable is returned"),
        pytest.param(
            {},
            "STRIPE",
            SecretNotFound("env:STRIPE: environment variable STRIPE is not set"),
            id="unset variable is not found",
        ),
        pytest.param(
            {"STRIPE": ""},
            "STRIPE",
            SecretNotFound("env:STRIPE: environment variable STRIPE is empty"),
            id="empty variable is not found",
        ),
        pytest.param(
            {"stripe": "x"},
            "STRIPE",
            SecretNotFound("env:STRIPE: environment variable STRIPE is not set"),
            id="names are case-sensitive",
        ),
    ],
)
async def test_env_backend(environ: dict[str, str], name: str, outcome: str | SecretError) -> None:
    backend = EnvBackend(environ)
    ref = SecretRef("env", name, None)
    if isinstance(outcome, str):
        assert (await backend.fetch(ref)).reveal() == outcome
    else:
        with pytest.raises(type(outcome)) as info:
            await backend.fetch(ref)
        assert str(info.value) == str(outcome)
    await backend.close()


async def test_env_backend_reads_the_mapping_on_every_fetch() -> None:
    environ = {"K": "one"}
    backend = EnvBackend(environ)
    ref = parse_secret_ref("env:K")
    assert (await backend.fetch(ref)).reveal() == "one"
    environ["K"] = "two"
    assert (await backend.fetch(ref)).reveal() == "two"


async def test_env_backend_defaults_to_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EGRESS_TEST_SECRET_ENV", "from-os-environ")
    assert (
        await EnvBackend().fetch(parse_secret_ref("env:EGRESS_TEST_SECRET_ENV"))
    ).reveal() == "from-os-environ"


async def test_backends_refuse_other_schemes() -> None:
    with pytest.raises(SecretUnavailable) as info:
        await EnvBackend({}).fetch(parse_secret_ref("file:/x"))
    assert str(info.value) == "file:/x: the env backend cannot read file: references"


@pytest.mark.parametrize(
    "content, expected",
    [
        pytest.param(b"sk_1\n", "sk_1", id="one trailing newline is removed"),
        pytest.param(b"sk_1\r\n", "sk_1", id="one trailing CRLF is removed"),
        pytest.param(b"sk_1", "sk_1", id="no trailing newline"),
        pytest.param(b"sk_1\n\n", "sk_1\n", id="only one newline is removed"),
        pytest.param(b"  sk 1 \n", "  sk 1 ", id="other whitespace is kept"),
        pytest.param("clé\n".encode(), "clé", id="utf-8 text"),
    ],
)
async def test_file_backend_contents(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content)
    assert (await FileBackend().fetch(SecretRef("file", str(path), None))).reveal() == expected


@pytest.mark.parametrize(
    "setup, error, message",
    [
        pytest.param(
            lambda p: None, SecretNotFound, "no such file", id="missing file is not found"
        ),
        pytest.param(
            lambda p: p.write_bytes(b"\n"),
            SecretNotFound,
            "the file is empty",
            id="file with only a newline is not found",
        ),
        pytest.param(
            lambda p: p.mkdir(), SecretNotFound, "not a regular file", id="directory is not found"
        ),
        pytest.param(
            lambda p: os.mkfifo(p),
            SecretNotFound,
            "not a regular file",
            id="fifo is refused without blocking",
        ),
        pytest.param(
            lambda p: p.write_bytes(b"\xff\xfe\n"),
            SecretUnavailable,
            "the file is not UTF-8 text",
            id="binary file is unavailable",
        ),
        pytest.param(
            lambda p: p.write_bytes(b"x" * (MAX_SECRET_FILE_BYTES + 1)),
            SecretUnavailable,
            f"larger than {MAX_SECRET_FILE_BYTES} bytes",
            id="oversized file is unavailable",
        ),
    ],
)
async def test_file_backend_errors(
    tmp_path: Path, setup: object, error: type[SecretError], message: str
) -> None:
    path = tmp_path / "secret"
    assert callable(setup)
    setup(path)
    with pytest.raises(error) as info:
        await FileBackend().fetch(SecretRef("file", str(path), None))
    assert str(info.value) == f"file:{path}: {message}"


async def test_file_under_a_missing_directory_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    ref = SecretRef("file", str(tmp_path / "plain" / "secret"), None)
    with pytest.raises(SecretNotFound) as info:
        await FileBackend().fetch(ref)
    assert str(info.value) == f"{ref}: no such file"


def _fetch_error(path: Path) -> str:
    try:
        asyncio.run(FileBackend().fetch(SecretRef("file", str(path), None)))
    except SecretError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def _fetch_error_as_nobody(path: Path) -> str:
    """Root reads any file, so fetch in a forked child that has become nobody: a real
    permission error rather than a simulated one."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_end, _fetch_error(path).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        out = pipe.read(4096).decode()  # EOF when the child exits
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return out


def test_unreadable_file_is_forbidden(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("sk_1")
    path.chmod(0)
    out = _fetch_error_as_nobody(path) if os.geteuid() == 0 else _fetch_error(path)
    assert out == f"SecretForbidden: file:{path}: permission denied"


async def test_other_open_errors_are_unavailable(tmp_path: Path) -> None:
    # A path through a regular file is ENOTDIR (not found); reading a path longer than the
    # system allows is an OSError that is neither: it must fail closed as unavailable.
    ref = SecretRef("file", "/" + "a" * 5000, None)
    with pytest.raises(SecretUnavailable) as info:
        await FileBackend().fetch(ref)
    assert str(info.value) == f"{ref}: cannot open (ENAMETOOLONG)"


async def test_file_rotation_is_seen_on_the_next_fetch(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("v1\n")
    backend, ref = FileBackend(), SecretRef("file", str(path), None)
    assert (await backend.fetch(ref)).reveal() == "v1"
    path.write_text("v2\n")
    assert (await backend.fetch(ref)).reveal() == "v2"
