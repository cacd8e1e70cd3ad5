"""The `egress exec` jail: run a command in a network namespace whose only way out is egress.

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
- The command runs as an unprivileged user with no_new_privs and no supplementary groups
  (root inside the jail could simply join the host's namespace again), in its own mount
  namespace where /etc/resolv.conf names no server and the local resolver sockets that would
  resolve names for it (nscd, systemd-resolved, avahi, the D-Bus system bus) are hidden.

It isolates the network only: files, processes and other Unix sockets (docker.sock,
ssh-agent, X11) stay as visible as the chosen user's permissions allow. Put the command in
a container too when that matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import struct
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["DEFAULT_MASK", "JailSpec", "Namespace", "exit_status", "run", "unavailable"]

# Local sockets that resolve names (or reach a daemon that does) on behalf of a client: a
# jailed process could ask them for DNS, and DNS queries carry data out.
DEFAULT_MASK: tuple[str, ...] = (
    "/run/systemd/resolve",
    "/run/nscd",
    "/var/run/nscd",
    "/run/avahi-daemon",
    "/run/dbus/system_bus_socket",
    "/var/run/dbus/system_bus_socket",
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


def unavailable(*, platform: str, euid: int) -> str | None:
    """Why the jail cannot be built here, or None. Pure: the caller passes the facts."""
    if not platform.startswith("linux"):
        return ("egress exec needs Linux network namespaces; on this system run skills in a "
                "container on an internal network instead (see the README)")
    if euid != 0:
        return ("egress exec must start as root to create a network namespace (the command "
                "itself runs as you, not as root): sudo egress exec --skill SKILL -- COMMAND")
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

# Runs as root in a fresh interpreter (`python -I -S -c`, stdlib only), between fork and the
# command: join the jail, hide the resolver, drop to the user for good, exec. Any failure
# before exec ends it with 126 and a message; a command that is not found, with 127.
_CHILD = r"""
import ctypes, json, os, signal, sys
def fail(message, code=126):
    os.write(2, ("egress exec: " + message + "\n").encode("utf-8", "replace"))
    os._exit(code)
cfg, cmd = json.loads(sys.argv[1]), sys.argv[2:]
libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_SLAVE = 1, 2, 4, 8, 4096, 16384, 1 << 19
def mount(source, target, fstype, flags, data):
    if libc.mount(source, target.encode(), fstype, ctypes.c_ulong(flags), data) != 0:
        fail("cannot hide %s inside the jail: %s" % (target, os.strerror(ctypes.get_errno())))
def prctl(option, value):
    if libc.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        fail("prctl(%d) failed: %s" % (option, os.strerror(ctypes.get_errno())))
try:
    os.setns(cfg["nsfd"], os.CLONE_NEWNET)
    os.close(cfg["nsfd"])
    os.unshare(os.CLONE_NEWNS)
except OSError as exc:
    fail("cannot enter the jail: %s" % exc.strerror)
mount(None, "/", None, MS_REC | MS_SLAVE, None)  # nothing mounted here shows on the host
if os.path.exists("/etc/resolv.conf"):
    mount(cfg["resolv"].encode(), "/etc/resolv.conf", None, MS_BIND, None)
seen = set()
for path in cfg["mask"]:
    if not os.path.exists(path) or os.path.realpath(path) in seen:
        continue
    seen.add(os.path.realpath(path))
    if os.path.isdir(path):
        mount(b"egress", path, b"tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, b"size=4k,mode=555")
    else:
        mount(b"/dev/null", path, None, MS_BIND, None)
prctl(38, 1)  # PR_SET_NO_NEW_PRIVS: setuid programs (sudo, su) cannot give root back
try:
    os.setgroups([])
    os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
    os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
except OSError as exc:
    fail("cannot switch to uid %d: %s" % (cfg["uid"], exc.strerror))
if os.getresuid() != (cfg["uid"],) * 3 or 0 in os.getresuid():
    fail("still privileged after switching user; refusing to run the command")
prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (after setuid, which clears it)
if os.getppid() != cfg["parent"]:
    os._exit(126)  # egress exec died in the meantime
def find(name):  # as a shell does: PATH directories this user cannot search are skipped
    if "/" in name:
        return name
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None
path = find(cmd[0])
if path is None:
    fail("%s: command not found" % cmd[0], 127)
try:
    os.execv(path, cmd)
except OSError as exc:
    fail("%s: %s" % (cmd[0], exc.strerror), 127 if isinstance(exc, FileNotFoundError) else 126)
"""


async def run(spec: JailSpec) -> int:
    """Run the command in a new jail; return its exit status. Nothing of the jail outlives it:
    leftover processes are killed, and the namespace goes with its last socket and process."""
    if spec.uid == 0:
        raise ValueError("refusing to run a jailed command as root")
    namespace = Namespace.create(spec.port)
    relay = Relay(spec.proxy)
    loop = asyncio.get_running_loop()
    server: asyncio.Server | None = None
    proc: asyncio.subprocess.Process | None = None
    handled: list[signal.Signals] = []
    killers: list[asyncio.TimerHandle] = []
    try:
        server = await asyncio.start_server(relay.handle, sock=namespace.listener)
        cfg = {"nsfd": namespace.fd, "uid": spec.uid, "gid": spec.gid, "parent": os.getpid(),
               "resolv": spec.resolv_conf, "mask": list(spec.mask)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-S", "-c", _CHILD, json.dumps(cfg), *spec.command,
            env=dict(spec.env), pass_fds=(namespace.fd,),
        )
        child = proc

        def forward(sig: signal.Signals) -> None:
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(sig)
                if sig != signal.SIGINT:  # Ctrl-C in an interactive command must not kill it
                    killers.append(loop.call_later(spec.grace, _kill, child))

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, forward, sig)
            handled.append(sig)
        return exit_status(await proc.wait())
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


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
