"""How `egress exec` starts the command inside the jail: bubblewrap's arguments and the two
short stages around it (egress/jail/namespace.py builds the network namespace and calls these).

    egress exec (root)
      └─ enter   python -I -S, root: parent-death signal, join the jail's network namespace,
         │       exec bwrap (nothing else of the host's changes for it)
         └─ bwrap (root, outside)  new PID, IPC and mount namespaces: private /proc and /dev,
            │    resolver hidden; keeps CAP_SETUID/SETGID/DAC_READ_SEARCH only; no_new_privs;
            │    installs the seccomp filter (egress/jail/syscall_filter.py) and runs, as PID 2:
            └─ drop  python -I -S, filtered: become the user for good, clear every capability,
                     check, exec COMMAND

bubblewrap (Debian's `bubblewrap`, what Flatpak and other sandboxes use) does the namespace,
mount, capability and seccomp work; running it as root (not setuid, no user namespace) means
it needs neither unprivileged user namespaces nor a setuid binary. It cannot switch to
another uid without a user namespace, so `drop` does that after it, still inside the filter.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["DROP", "ENTER", "MISSING_BWRAP", "STAGE_ENV", "Mounts", "bwrap_argv", "plan_mounts"]

MISSING_BWRAP = ("egress exec needs bubblewrap (`bwrap`) to build the jail and found none on "
                 "PATH: apt-get install bubblewrap (Debian/Ubuntu), dnf install bubblewrap "
                 "(Fedora)")

# Stage 1, root, in a fresh interpreter between fork and bwrap (stdlib only): die with egress
# exec, join the network namespace, exec bwrap. Failures end it with 126 and a message.
ENTER = r"""
import ctypes, json, os, signal, sys
def fail(message):
    os.write(2, ("egress exec: " + message + "\n").encode("utf-8", "replace"))
    os._exit(126)
cfg, argv = json.loads(sys.argv[1]), sys.argv[2:]
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(1, ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
    fail("prctl(PR_SET_PDEATHSIG) failed: %s" % os.strerror(ctypes.get_errno()))
if os.getppid() != cfg["parent"]:
    os._exit(126)  # egress exec died in the meantime
try:
    os.setns(cfg["nsfd"], os.CLONE_NEWNET)
    os.close(cfg["nsfd"])
except OSError as exc:
    fail("cannot enter the jail: %s" % exc.strerror)
try:
    os.execv(argv[0], argv)
except OSError as exc:
    fail("cannot run %s: %s" % (argv[0], exc.strerror))
"""

# Stage 2, PID 2 of the jail, as root with only the three capabilities above, already under
# the seccomp filter and no_new_privs. Tells egress exec that bwrap got this far, reads the
# command's environment, becomes the user for good, checks, execs. A command that is not
# found ends it with 127.
#
# The stages and bwrap run as root with a fixed environment (STAGE_ENV): the command's, which
# --env may fill, could otherwise bring LD_PRELOAD or LD_LIBRARY_PATH to a root process. It
# travels on a descriptor, not in argv (argv is world-readable in /proc; it holds the token).
DROP = r"""
import ctypes, json, os, sys
def fail(message, code=126):
    os.write(2, ("egress exec: " + message + "\n").encode("utf-8", "replace"))
    os._exit(code)
cfg, cmd = json.loads(sys.argv[1]), sys.argv[2:]
os.write(cfg["started"], b"1")
os.close(cfg["started"])
with os.fdopen(cfg["env"], "rb") as fh:
    env = json.loads(fh.read())
env["PWD"] = os.getcwd()
uid, gid = cfg["uid"], cfg["gid"]
try:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
except OSError as exc:
    fail("cannot switch to uid %d: %s" % (uid, exc.strerror))
# setresuid cleared the permitted, effective and ambient sets; clear the inheritable one too.
header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
libc = ctypes.CDLL(None, use_errno=True)
if libc.capset(header, (ctypes.c_uint32 * 6)()) != 0:
    fail("cannot clear capabilities: %s" % os.strerror(ctypes.get_errno()))
with open("/proc/self/status") as fh:
    status = dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)
caps = [int(status[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")]
if (os.getresuid() != (uid,) * 3 or os.getresgid() != (gid,) * 3 or 0 in os.getresuid()
        or os.getgroups() != [] or any(caps)
        or status.get("NoNewPrivs") != "1" or status.get("Seccomp") != "2"):
    fail("the jail is not as built (privileges, no_new_privs or the syscall filter); "
         "refusing to run the command")
def find(name):  # as a shell does: PATH directories this user cannot search are skipped
    if "/" in name:
        return name
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None
path = find(cmd[0])
if path is None:
    fail("%s: command not found" % cmd[0], 127)
try:
    os.execve(path, cmd, env)
except OSError as exc:
    fail("%s: %s" % (cmd[0], exc.strerror), 127 if isinstance(exc, FileNotFoundError) else 126)
"""

STAGE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}


@dataclass(frozen=True)
class Mounts:
    """What the jail's file system changes, as host paths (symlinks resolved)."""

    resolv_conf: str | None  # where the resolver stub goes (/etc/resolv.conf's target)
    hidden_dirs: tuple[str, ...]  # covered by an empty read-only tmpfs
    hidden_files: tuple[str, ...]  # covered by /dev/null (a socket becomes a device no one can open)


def plan_mounts(mask: Iterable[str]) -> Mounts:
    """Resolve the paths to hide, now, on the host: bwrap would mount on a symlink's target
    anyway, and two names of one directory need one mount."""
    resolv = os.path.realpath("/etc/resolv.conf") if os.path.exists("/etc/resolv.conf") else None
    dirs: list[str] = []
    files: list[str] = []
    for path in mask:
        if not os.path.exists(path):
            continue
        real = os.path.realpath(path)
        if real in dirs or real in files:
            continue
        (dirs if os.path.isdir(real) else files).append(real)
    return Mounts(resolv, tuple(dirs), tuple(files))


def bwrap_argv(bwrap: str, *, mounts: Mounts, resolv_stub: str, seccomp_fd: int,
               python: str, drop_config: str, command: Sequence[str]) -> list[str]:
    """bubblewrap's command line: the host's file system as it is (nosuid, nodev), a new /dev
    and /proc, the resolver hidden, two capabilities for `drop`, the filter."""
    argv = [bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc",
            "--bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    if mounts.resolv_conf is not None:  # before the masks: it may live in a hidden directory
        argv += ["--ro-bind", resolv_stub, mounts.resolv_conf]
    for path in mounts.hidden_dirs:
        argv += ["--tmpfs", path, "--remount-ro", path]
    for path in mounts.hidden_files:
        argv += ["--ro-bind", "/dev/null", path]
    # `drop` needs to switch ids, and to reach its interpreter where egress is installed: a
    # venv under a home directory only its owner may enter is common. setresuid to the user
    # then clears all three.
    argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
             "--cap-add", "CAP_DAC_READ_SEARCH", "--seccomp", str(seccomp_fd),
             "--", python, "-I", "-S", "-c", DROP, drop_config, *command]
    return argv
