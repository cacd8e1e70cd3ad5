"""The `egress exec` jail's seccomp filter: the syscalls the jailed command may not make.

The filter answers everything the jail refuses with an errno (the command sees an ordinary
failure, not a crash) and lets every other syscall through: it closes the ways a process
reaches *other* processes or changes its namespaces, it is not a general hardening profile.
`REFUSALS` below is the whole list, each with why. It is compiled for the machine's native
architecture only; a syscall made through another ABI (32-bit x86 `int 0x80` on x86_64, x32,
32-bit ARM on arm64) kills the process, since the table would not apply to its numbers.

The program itself is built by libseccomp (what Docker, Podman, systemd and Flatpak use),
loaded from Debian's `libseccomp2` (which apt itself depends on) through a few ctypes calls,
and handed to bubblewrap (`bwrap --seccomp FD`), which installs it after no_new_privs, right
before the command runs. libseccomp knows every architecture's syscall numbers, the x32
bit, and how to compare 64-bit arguments with 32-bit BPF; this module only names the rules.
(No Python binding is maintained on PyPI: libseccomp's own is not published there, pyseccomp
was last released in 2021, and Debian's python3-seccomp is for the system Python only.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from dataclasses import dataclass

__all__ = ["REFUSALS", "Refusal", "SyscallFilterError", "compile_filter", "unavailable"]

LIBRARY = "libseccomp.so.2"
PACKAGE_HINT = "apt-get install libseccomp2 (Debian/Ubuntu), dnf install libseccomp (Fedora)"

_ACT_ALLOW = 0x7FFF0000
_ACT_KILL_PROCESS = 0x80000000
_ATTR_ACT_BADARCH = 2
_CMP_MASKED_EQ = 7
_NR_SCMP_ERROR = -1

# clone(2) flags that create namespaces. CLONE_NEWTIME is left out: in clone(2) (not clone3
# or unshare) its bit is part of the exit-signal byte.
_CLONE_NEW = {"CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000,
              "CLONE_NEWUTS": 0x04000000, "CLONE_NEWIPC": 0x08000000,
              "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
              "CLONE_NEWNET": 0x40000000}
TIOCSTI, TIOCLINUX = 0x5412, 0x541C


class SyscallFilterError(Exception):
    """libseccomp is missing or refused a rule; the jail is not built without its filter."""


@dataclass(frozen=True)
class Refusal:
    """One rule: `syscall` fails with `errno` (when `arg` is set: only if the argument
    masked with `mask` equals `value`)."""

    syscall: str
    errno: int
    why: str
    arg: int | None = None
    mask: int = 0
    value: int = 0


def _always(names: str, why: str, err: int = errno.EPERM) -> tuple[Refusal, ...]:
    return tuple(Refusal(name, err, why) for name in names.split())


REFUSALS: tuple[Refusal, ...] = (
    *_always("ptrace process_vm_readv process_vm_writev",
             "reading, writing or steering another process (the issue 17 escape)"),
    *_always("pidfd_open pidfd_getfd kcmp",
             "handles on other processes and copies of their file descriptors"),
    *_always("setns unshare",
             "joining or making namespaces (a user namespace is where mount etc. would work)"),
    *(Refusal("clone", errno.EPERM, f"a new process in a new namespace ({name})", 0, flag, flag)
      for name, flag in _CLONE_NEW.items()),
    # clone3 passes its flags in memory a filter cannot read: ENOSYS makes libc fall back to
    # clone, whose flags are checked above (what Docker and Flatpak do).
    *_always("clone3", "flags out of the filter's sight; libc falls back to clone", errno.ENOSYS),
    *_always("mount umount2 pivot_root chroot open_tree move_mount fsopen fsconfig fsmount "
             "fspick mount_setattr", "changing what the file system looks like"),
    *_always("open_by_handle_at",
             "opening files by handle, around path permissions (the 'shocker' escape)"),
    *_always("keyctl add_key request_key",
             "the kernel keyrings are not namespaced: the user's keys live there"),
    *_always("bpf perf_event_open userfaultfd",
             "kernel attack surface a network client does not need"),
    *_always("io_uring_setup io_uring_enter io_uring_register",
             "io_uring runs syscalls the filter never sees"),
    # The ioctl number is an int: compare only its low 32 bits, so a value with the upper
    # half set cannot slip past (the sign-extension hole CVE-2019-10063 in Flatpak).
    Refusal("ioctl", errno.EPERM, "TIOCSTI: typing into the caller's terminal", 1, 0xFFFFFFFF,
            TIOCSTI),
    Refusal("ioctl", errno.EPERM, "TIOCLINUX: pasting into a virtual console", 1, 0xFFFFFFFF,
            TIOCLINUX),
)


class _ArgCmp(ctypes.Structure):  # struct scmp_arg_cmp
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def _load() -> ctypes.CDLL:
    path = ctypes.util.find_library("seccomp") or LIBRARY
    try:
        lib = ctypes.CDLL(path, use_errno=True)
    except OSError as exc:
        raise SyscallFilterError(f"egress exec needs libseccomp for its syscall filter and "
                                 f"cannot load it ({exc}): {PACKAGE_HINT}") from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def unavailable() -> str | None:
    """Why no filter can be built here, or None."""
    try:
        compile_filter()
    except SyscallFilterError as exc:
        return str(exc)
    return None


def compile_filter(refusals: tuple[Refusal, ...] = REFUSALS) -> bytes:
    """The classic-BPF program (an array of `struct sock_filter`) for `bwrap --seccomp`."""
    lib = _load()
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        raise SyscallFilterError("libseccomp could not start a filter (seccomp_init failed)")
    try:
        _check(lib.seccomp_attr_set(ctx, _ATTR_ACT_BADARCH, _ACT_KILL_PROCESS),
               "kill the process on a foreign-architecture syscall")
        for rule in refusals:
            number = lib.seccomp_syscall_resolve_name(rule.syscall.encode())
            if number == _NR_SCMP_ERROR:
                raise SyscallFilterError(
                    f"this libseccomp does not know the syscall {rule.syscall!r}, so the jail "
                    f"cannot refuse it; install a newer libseccomp ({PACKAGE_HINT})")
            action = 0x00050000 | (rule.errno & 0xFFFF)  # SCMP_ACT_ERRNO(errno)
            if rule.arg is None:
                _check(lib.seccomp_rule_add_array(ctx, action, number, 0, None),
                       f"add the rule for {rule.syscall}")
            else:
                cmp = _ArgCmp(rule.arg, _CMP_MASKED_EQ, rule.mask, rule.value)
                _check(lib.seccomp_rule_add_array(ctx, action, number, 1, ctypes.byref(cmp)),
                       f"add the rule for {rule.syscall}")
        fd = os.memfd_create("egress-seccomp", os.MFD_CLOEXEC)
        try:
            _check(lib.seccomp_export_bpf(ctx, fd), "export the program")
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)
    program = b"".join(chunks)
    if not program or len(program) % 8:
        raise SyscallFilterError(f"libseccomp exported a malformed program ({len(program)} bytes)")
    return program


def _check(result: int, what: str) -> None:
    if result < 0:
        raise SyscallFilterError(f"libseccomp refused to {what}: {os.strerror(-result)}")
