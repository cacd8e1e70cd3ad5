"""The jail's seccomp program, asked directly (tests/jail/bpf.py runs it): what it answers for
each syscall, argument and architecture. The real jail's answers are in
test_exec_isolation.py; this covers what a kernel here cannot show (other ABIs)."""

from __future__ import annotations

import ctypes
import errno
import platform

import pytest

from egress.jail import syscall_filter
from egress.jail.syscall_filter import REFUSALS, Refusal, SyscallFilterError, compile_filter
from tests.jail import bpf
from tests.jail.probe import SYSCALLS

MACHINE = platform.machine()
NATIVE = {"x86_64": bpf.AUDIT_ARCH_X86_64, "aarch64": bpf.AUDIT_ARCH_AARCH64}.get(MACHINE)
NO_LIBRARY = syscall_filter.unavailable()
pytestmark = [pytest.mark.skipif(NATIVE is None, reason=f"no syscall table for {MACHINE}"),
              pytest.mark.skipif(NO_LIBRARY is not None, reason=NO_LIBRARY or "")]

NR = SYSCALLS.get(MACHINE, {}) | {
    "x86_64": {"read": 0, "write": 1, "chroot": 161, "fsconfig": 431, "fsmount": 432,
               "fspick": 433, "name_to_handle_at": 303},
    "aarch64": {"read": 63, "write": 64, "chroot": 51, "fsconfig": 431, "fsmount": 432,
                "fspick": 433, "name_to_handle_at": 264},
}.get(MACHINE, {})
CLONE_VM, CLONE_FS, CLONE_FILES, CLONE_SIGHAND, CLONE_THREAD = 0x100, 0x200, 0x400, 0x800, 0x10000
SIGCHLD = 17


@pytest.fixture(scope="module")
def program() -> bytes:
    return compile_filter()


def answer(program: bytes, name: str, *args: int, arch: int | None = None) -> int:
    return bpf.run(program, bpf.seccomp_data(arch or NATIVE or 0, NR[name], args))


def errno_of(err: int) -> int:
    return bpf.RET_ERRNO | err


def test_every_refusal_is_answered_with_its_errno(program: bytes) -> None:
    for rule in REFUSALS:
        args = [0] * 6
        if rule.arg is not None:
            args[rule.arg] = rule.value
        assert answer(program, rule.syscall, *args) == errno_of(rule.errno), rule


@pytest.mark.parametrize("name, args, expected", [
    pytest.param("read", (0, 0, 0), bpf.RET_ALLOW, id="read is allowed"),
    pytest.param("getpid", (), bpf.RET_ALLOW, id="getpid is allowed"),
    pytest.param("name_to_handle_at", (), bpf.RET_ALLOW, id="name_to_handle_at is allowed"),
    pytest.param("clone", (SIGCHLD,), bpf.RET_ALLOW, id="fork (clone with SIGCHLD) is allowed"),
    pytest.param("clone", (CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD,),
                 bpf.RET_ALLOW, id="a thread is allowed"),
    pytest.param("clone", (0x10000000 | SIGCHLD,), errno_of(errno.EPERM), id="clone new user ns"),
    pytest.param("clone", (0x40000000 | CLONE_VM,), errno_of(errno.EPERM), id="clone new net ns"),
    pytest.param("clone", (0x00020000 | 0x20000000,), errno_of(errno.EPERM), id="clone new mnt+pid"),
    pytest.param("clone", (2**64 - 1,), errno_of(errno.EPERM), id="clone with every flag"),
    pytest.param("clone3", (0, 0), errno_of(errno.ENOSYS), id="clone3 says ENOSYS"),
    pytest.param("ioctl", (0, 0x5401), bpf.RET_ALLOW, id="ioctl TCGETS is allowed"),
    pytest.param("ioctl", (0, 0x5412), errno_of(errno.EPERM), id="ioctl TIOCSTI"),
    pytest.param("ioctl", (0, 0xFFFFFFFF_00005412), errno_of(errno.EPERM),
                 id="ioctl TIOCSTI with the upper half set"),
    pytest.param("ioctl", (0, 0x1_00005412), errno_of(errno.EPERM),
                 id="ioctl TIOCSTI with one upper bit set"),
    pytest.param("ioctl", (0, 0x541C), errno_of(errno.EPERM), id="ioctl TIOCLINUX"),
    pytest.param("ptrace", (0, 1), errno_of(errno.EPERM), id="ptrace TRACEME too"),
    pytest.param("chroot", (0,), errno_of(errno.EPERM), id="chroot"),
])
def test_answers_for_the_native_architecture(program: bytes, name: str, args: tuple[int, ...],
                                             expected: int) -> None:
    assert answer(program, name, *args) == expected


@pytest.mark.parametrize("arch, nr", [
    pytest.param(bpf.AUDIT_ARCH_I386, 26, id="i386 ptrace (int 0x80 on x86_64)"),
    pytest.param(bpf.AUDIT_ARCH_I386, 3, id="i386 read"),
    pytest.param(bpf.AUDIT_ARCH_ARM, 26, id="32-bit ARM"),
    pytest.param(bpf.AUDIT_ARCH_AARCH64 if MACHINE == "x86_64" else bpf.AUDIT_ARCH_X86_64, 0,
                 id="the other 64-bit architecture"),
])
def test_foreign_architectures_are_killed(program: bytes, arch: int, nr: int) -> None:
    assert bpf.run(program, bpf.seccomp_data(arch, nr)) == bpf.RET_KILL_PROCESS


@pytest.mark.skipif(MACHINE != "x86_64", reason="x32 is an x86_64 ABI")
@pytest.mark.parametrize("name", ["read", "ptrace", "getpid"])
def test_x32_syscalls_are_killed(program: bytes, name: str) -> None:
    # x32 syscalls arrive with AUDIT_ARCH_X86_64 and bit 30 set in the number.
    data = bpf.seccomp_data(bpf.AUDIT_ARCH_X86_64, NR[name] | bpf.X32_SYSCALL_BIT)
    assert bpf.run(program, data) == bpf.RET_KILL_PROCESS


def test_probe_syscall_numbers_match_libseccomp() -> None:
    # The jail tests call syscalls by number (tests/jail/probe.py); libseccomp's tables say
    # whether those numbers are right for both architectures the probe knows.
    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    for machine, arch in (("x86_64", bpf.AUDIT_ARCH_X86_64), ("aarch64", bpf.AUDIT_ARCH_AARCH64)):
        for name, number in SYSCALLS[machine].items():
            assert lib.seccomp_syscall_resolve_name_arch(arch, name.encode()) == number, (
                machine, name)


def test_refusal_table_covers_the_issue() -> None:
    refused = {rule.syscall for rule in REFUSALS}
    assert {"ptrace", "process_vm_readv", "process_vm_writev", "pidfd_open", "pidfd_getfd",
            "kcmp", "setns", "unshare", "mount", "open_by_handle_at", "keyctl", "bpf",
            "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
            "io_uring_register"} <= refused
    assert all(rule.why for rule in REFUSALS)


def test_unknown_syscall_is_an_error_not_a_gap() -> None:
    with pytest.raises(SyscallFilterError) as err:
        compile_filter((Refusal("no_such_syscall_egress", errno.EPERM, "test"),))
    assert str(err.value).startswith("this libseccomp does not know the syscall "
                                     "'no_such_syscall_egress', so the jail cannot refuse it;")


def test_missing_library_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syscall_filter.ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(syscall_filter, "LIBRARY", "libseccomp-missing-egress.so.9")
    message = syscall_filter.unavailable()
    assert message is not None
    assert message.startswith("egress exec needs libseccomp for its syscall filter and cannot "
                              "load it (")
    assert message.endswith("): apt-get install libseccomp2 (Debian/Ubuntu), dnf install "
                            "libseccomp (Fedora)")
