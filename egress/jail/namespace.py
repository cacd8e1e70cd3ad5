"""The `egress exec` jail: run a command whose only way out is egress, and which cannot reach
the processes outside it.

    host network namespace                   │ jail network namespace (only `lo`)
                                             │
    egress serve ◀── relay (this process) ◀──┼── 127.0.0.1:PORT ◀── COMMAND (as --user)
      127.0.0.1:8080      asyncio            │   listening socket created inside the jail

The jail is a fresh network namespace with nothing in it but a loopback interface: no veth,
no address on the host side, no route, no DNS server. The one thing that answers in it is a
listening socket that this process created *inside* the namespace (a socket keeps the
namespace it was created in) and serves from the host namespace, relaying each connection
to egress. So the proxy URL inside is the same as outside (http://SKILL:TOKEN@127.0.0.1:PORT)
and there is nothing else to reach:

- No veth, so no path to services that listen on the host's wildcard addresses (sshd,
  databases, published container ports), nothing to forward if the host routes packets, no
  address range that could collide with real networks, and nothing to leak: the namespace is
  anonymous and the kernel frees it when the last socket and process in it are gone, even if
  this process is SIGKILLed.
- A network namespace alone is not enough when a process *outside* it can be made to connect
  for the command: a process of the same user can be ptraced and steered (issue 17). So the
  command also gets, from bubblewrap (egress/jail/sandbox.py): its own PID namespace (it is PID 2,
  the child of the jail's init; no host process is visible, signalable or traceable), a
  private /proc and /dev, its own IPC namespace (no host SysV IPC or POSIX message queues),
  and a seccomp filter (egress/jail/syscall_filter.py) that refuses ptrace, process_vm_*, pidfds,
  kcmp, every namespace and mount call, keyrings, bpf, perf, userfaultfd, io_uring and
  TIOCSTI (typing into the caller's terminal).
- The command runs as an unprivileged user with no_new_privs, no capabilities and no
  supplementary groups (root inside the jail could simply join the host's namespace again).
  /etc/resolv.conf names no server and the local resolver sockets that would resolve names
  for it (nscd, systemd-resolved, avahi, the D-Bus system bus) are hidden, as are the
  per-user runtime directories (/run/user: session bus, systemd --user, agents) and X11's
  sockets, whose daemons would act outside the jail on its behalf.

Not isolated: the file system (files and Unix sockets stay as visible as the user's
permissions allow, so a daemon of the same user listening on a socket elsewhere, such as a
tmux server in /tmp, could still act for it; run the command as a dedicated user), the
kernel itself, and CPU, memory and disk use. Put the command in a container too when that
matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from egress.jail import sandbox, syscall_filter

__all__ = ["DEFAULT_MASK", "JailSpec", "Namespace", "command_pid", "exit_status", "run",
           "unavailable"]

# Local sockets that resolve names (or reach a daemon that does) on behalf of a client: a
# jailed process could ask them for DNS, and DNS queries carry data out.
DEFAULT_MASK: tuple[str, ...] = (
    "/run/systemd/resolve",
    "/run/nscd",
    "/var/run/nscd",
    "/run/avahi-daemon",
    "/run/dbus/system_bus_socket",
    "/var/run/dbus/system_bus_socket",
    # Daemons of the same user that act on request outside the jail: the session bus and
    # systemd --user (`systemd-run --user` starts anything), gpg/ssh agents, Wayland; X11.
    "/run/user",
    "/var/run/user",
    "/tmp/.X11-unix",
)

RESOLV_CONF = (
    "# egress exec: the jail has no DNS server. Clients reach hosts through the proxy\n"
    "# (HTTPS_PROXY), which resolves names itself.\n"
    "options timeout:1 attempts:1\n"
)

_RELAY_LIMIT = 256  # concurrent connections through the relay; more are closed at once
_CONNECT_TIMEOUT = 10.0
_CHUNK = 65536


@dataclass(frozen=True)
class JailSpec:
    """Everything `run` needs; building one does no I/O."""

    command: tuple[str, ...]
    env: Mapping[str, str] = field(hash=False)  # the command's whole environment
    uid: int  # never 0: root could leave the namespace
    gid: int
    proxy: tuple[str, int]  # where egress listens, as seen from the host namespace
    port: int  # the relay's port on 127.0.0.1 inside the jail
    resolv_conf: str  # a file bind-mounted over /etc/resolv.conf inside the jail
    mask: tuple[str, ...] = DEFAULT_MASK  # paths hidden inside the jail
    grace: float = 10.0  # seconds between a forwarded SIGTERM/SIGHUP and SIGKILL
    bwrap: str | None = None  # bubblewrap; None: `bwrap` on PATH


def unavailable(*, platform: str, euid: int, bwrap: str | None) -> str | None:
    """Why the jail cannot be built here, or None. Pure: the caller passes the facts
    (`bwrap`: the path of bubblewrap, or None when there is none)."""
    if not platform.startswith("linux"):
        return ("egress exec needs Linux network namespaces; on this system run skills in a "
                "container on an internal network instead (see the README)")
    if euid != 0:
        return ("egress exec must start as root to create a network namespace (the command "
                "itself runs as you, not as root): sudo egress exec --skill SKILL -- COMMAND")
    if bwrap is None:
        return sandbox.MISSING_BWRAP
    return None


def exit_status(returncode: int) -> int:
    """A child's status the way shells report it: 128+N when killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


# -- the namespace -------------------------------------------------------------------------

@dataclass
class Namespace:
    """A new network namespace (only `lo`, up) and the relay's listening socket inside it."""

    listener: socket.socket
    fd: int  # an open handle on the namespace, passed to the child to join it
    inode: int  # identifies the namespace in /proc/PID/ns/net

    @classmethod
    def create(cls, port: int) -> Namespace:
        # unshare() moves only the calling thread, so a short-lived thread of its own builds
        # the namespace and the main thread (and asyncio's executor threads) stay on the host.
        result: list[Namespace | OSError] = []
        thread = threading.Thread(target=_build, args=(port, result), name="egress-jail")
        thread.start()
        thread.join()
        if not result:
            raise OSError(errno.EIO, "the namespace thread ended without a result")
        if isinstance(result[0], OSError):
            raise result[0]
        return result[0]

    def close(self) -> None:
        self.listener.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _build(port: int, result: list[Namespace | OSError]) -> None:
    listener: socket.socket | None = None
    try:
        os.unshare(os.CLONE_NEWNET)
        _loopback_up()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        listener.setblocking(False)
        fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        result.append(Namespace(listener, fd, os.fstat(fd).st_ino))
    except OSError as exc:
        if listener is not None:
            listener.close()
        result.append(exc)


def _loopback_up() -> None:
    """`ip link set lo up` without needing `ip`: SIOCGIFFLAGS / SIOCSIFFLAGS on a socket."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, siocgifflags, ifreq))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH22x", b"lo", flags | iff_up))


def processes_in(inode: int, proc: str = "/proc") -> list[int]:
    """PIDs of the processes whose network namespace is `inode`."""
    target = f"net:[{inode}]"
    pids = []
    for entry in os.listdir(proc):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"{proc}/{entry}/ns/net") == target:
                    pids.append(int(entry))
    return pids


def command_pid(inode: int, proc: str = "/proc") -> int | None:
    """The host PID of the jail's command: PID 2 in the jail's PID namespace (bwrap's init is
    PID 1), among the processes in network namespace `inode`."""
    for pid in processes_in(inode, proc):
        try:
            with open(f"{proc}/{pid}/status", encoding="ascii", errors="replace") as fh:
                nspid = next((line.split()[1:] for line in fh if line.startswith("NSpid:")), [])
        except OSError:
            continue
        if len(nspid) > 1 and nspid[-1] == "2":
            return pid
    return None


def _kill_leftovers(inode: int) -> None:
    """SIGKILL whatever the command left running in the jail (daemons, background jobs)."""
    for _ in range(5):  # a few rounds catch processes forked while we were killing
        pids = processes_in(inode)
        if not pids:
            return
        for pid in pids:
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue
            try:
                # Re-check through the pidfd's process: the PID may have been reused.
                if os.readlink(f"/proc/{pid}/ns/net") == f"net:[{inode}]":
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except OSError:
                pass
            finally:
                os.close(pidfd)


# -- the relay -----------------------------------------------------------------------------

class Relay:
    """Copies bytes between connections accepted inside the jail and egress on the host."""

    def __init__(self, target: tuple[str, int], limit: int = _RELAY_LIMIT) -> None:
        self.target = target
        self.limit = limit
        self._writers: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= self.limit:
            writer.transport.abort()
            return
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.target), _CONNECT_TIMEOUT)
            upstream = up_writer
            self._writers.add(up_writer)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, TimeoutError):
            pass  # egress unreachable: the client sees its connection close
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()

    def close_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(_CHUNK):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()  # half-close: the other direction may still be talking
    except OSError:
        dst.transport.abort()


# -- running the command -------------------------------------------------------------------

async def run(spec: JailSpec) -> int:
    """Run the command in a new jail; return its exit status. Nothing of the jail outlives it:
    the PID namespace dies with its init, leftovers in the network namespace are killed, and
    the namespace goes with its last socket and process.

    Raises OSError when the jail cannot be built, SyscallFilterError without its filter."""
    if spec.uid == 0:
        raise ValueError("refusing to run a jailed command as root")
    bwrap = spec.bwrap or shutil.which("bwrap")
    if bwrap is None:
        raise OSError(errno.ENOENT, sandbox.MISSING_BWRAP)
    program = syscall_filter.compile_filter()
    namespace = Namespace.create(spec.port)
    relay = Relay(spec.proxy)
    loop = asyncio.get_running_loop()
    server: asyncio.Server | None = None
    proc: asyncio.subprocess.Process | None = None
    handled: list[signal.Signals] = []
    forwarded: list[signal.Signals] = []
    killers: list[asyncio.TimerHandle] = []
    fds: list[int] = []
    try:
        server = await asyncio.start_server(relay.handle, sock=namespace.listener)
        seccomp_fd = os.memfd_create("egress-seccomp", os.MFD_CLOEXEC)
        fds.append(seccomp_fd)
        _write_all(seccomp_fd, program)
        env_fd = os.memfd_create("egress-env", os.MFD_CLOEXEC)
        fds.append(env_fd)
        _write_all(env_fd, json.dumps(dict(spec.env)).encode())
        started_r, started_w = os.pipe()
        fds += [started_r, started_w]
        drop = {"uid": spec.uid, "gid": spec.gid, "started": started_w, "env": env_fd}
        argv = sandbox.bwrap_argv(
            bwrap, mounts=sandbox.plan_mounts(spec.mask), resolv_stub=spec.resolv_conf,
            seccomp_fd=seccomp_fd, python=sys.executable, command=spec.command,
            drop_config=json.dumps(drop))
        enter = {"nsfd": namespace.fd, "parent": os.getpid()}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-S", "-c", sandbox.ENTER, json.dumps(enter), *argv,
            env=sandbox.STAGE_ENV, pass_fds=(namespace.fd, seccomp_fd, started_w, env_fd),
        )
        os.close(started_w)
        fds.remove(started_w)
        child = proc

        def forward(sig: signal.Signals) -> None:
            if child.returncode is None:
                forwarded.append(sig)
                target = command_pid(namespace.inode)
                with contextlib.suppress(ProcessLookupError):
                    if target is not None:
                        os.kill(target, sig)
                    else:  # not started yet, or gone: end the jail
                        child.send_signal(sig)
                if sig != signal.SIGINT:  # Ctrl-C in an interactive command must not kill it
                    killers.append(loop.call_later(spec.grace, _kill, child))

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, forward, sig)
            handled.append(sig)
        status = exit_status(await proc.wait())
        os.set_blocking(started_r, False)
        try:
            started = os.read(started_r, 1) == b"1"
        except BlockingIOError:
            started = False
        if not started and not forwarded and status != 126:  # bwrap said why on stderr
            print(f"egress exec: bubblewrap could not build the jail (exit status {status})",
                  file=sys.stderr)
            return 126
        return status
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        for timer in killers:
            timer.cancel()
        if proc is not None and proc.returncode is None:
            _kill(proc)
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
        _kill_leftovers(namespace.inode)
        if server is not None:
            server.close()
        relay.close_all()
        namespace.close()
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Fill a fresh memfd and rewind it for the reader."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
