"""What a skill might try, run inside `egress exec` by the jail tests (stdlib only, any Python 3).

    python3 probe.py '{"op": "tcp", "host": "10.200.1.2", "port": 8000}'

Prints one JSON object: {"ok": true, ...} or {"ok": false, "error": "ENETUNREACH"} (an errno
name, "timeout", or an exception class name).
"""

import ctypes
import errno
import json
import os
import platform
import socket
import stat
import struct
import sys
import time
import urllib.error
import urllib.request


def error(exc):
    if isinstance(exc, socket.timeout):
        return "timeout"
    if isinstance(exc, OSError) and exc.errno in errno.errorcode:
        return errno.errorcode[exc.errno]
    reason = getattr(exc, "reason", None)  # urllib wraps the socket error
    if isinstance(reason, BaseException) and reason is not exc:
        return error(reason)
    return type(exc).__name__


def tcp(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect((host, port))
    return {"ok": True}


def unix(path):
    """Connect to a Unix socket; a path starting with "@" is in the abstract namespace."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect("\0" + path[1:] if path.startswith("@") else path)
    return {"ok": True}


def mounts():
    """Mount points whose options lack nosuid or nodev (per-mount options, field 6)."""
    out = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            options = fields[5].split(",")
            out.append({"target": fields[4], "nosuid": "nosuid" in options,
                        "nodev": "nodev" in options})
    return {"ok": True, "mounts": out}


def udp_dns(host, port, name):
    query = struct.pack(">HHHHHH", 0x4567, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    query += struct.pack(">HH", 1, 1)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.connect((host, port))  # as resolvers do: ICMP errors then reach the socket
        sock.send(query)
        data = sock.recv(4096)
    return {"ok": True, "bytes": len(data)}


def resolve(name):
    return {"ok": True, "addresses": sorted({a[4][0] for a in socket.getaddrinfo(name, 80)})}


def http(url, use_proxy=True, cafile=None):
    handlers = [] if use_proxy else [urllib.request.ProxyHandler({})]
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(url, timeout=10) as resp:
            return {"ok": True, "status": resp.status, "body": json.loads(resp.read())}
    except urllib.error.HTTPError as exc:
        return {"ok": True, "status": exc.code, "body": json.loads(exc.read() or b"null")}


def _is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def info():
    with open("/proc/self/status") as fh:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)
    try:
        with open("/etc/resolv.conf") as fh:
            resolv = fh.read()
    except OSError as exc:
        resolv = "unreadable: " + error(exc)
    with open(os.environ.get("SSL_CERT_FILE", "/dev/null")) as fh:
        bundle = fh.read()
    return {"ok": True, "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
            "no_new_privs": status.get("NoNewPrivs"), "capabilities": status.get("CapEff"),
            "caps": {k: status.get(k) for k in ("CapInh", "CapPrm", "CapEff", "CapAmb")},
            "seccomp": status.get("Seccomp"), "pid": os.getpid(), "ppid": os.getppid(),
            "pids": sorted(int(e) for e in os.listdir("/proc") if e.isdigit()),
            "fds": [fd for fd in range(3, 1024) if _is_open(fd)],
            "env": dict(os.environ), "resolv": resolv,
            "interfaces": [name for _, name in socket.if_nameindex()],
            "netns": os.readlink("/proc/self/ns/net"), "bundle": bundle}


def listing(paths):
    out = {}
    for path in paths:
        try:
            mode = os.stat(path).st_mode
            out[path] = (sorted(os.listdir(path)) if stat.S_ISDIR(mode) else
                         "socket" if stat.S_ISSOCK(mode) else "chardev" if stat.S_ISCHR(mode) else "file")
        except OSError as exc:
            out[path] = error(exc)
    return {"ok": True, "paths": out}


def read(path):
    with open(path, "rb") as fh:
        return {"ok": True, "text": fh.read().decode("utf-8", "replace")}


# -- what a process may do to other processes (the ptrace escape) --------------------------

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]

# Syscall numbers of the calls the jail refuses (x86_64; aarch64 uses the generic table).
SYSCALLS = {
    "x86_64": {"ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
               "pidfd_open": 434, "pidfd_getfd": 438, "kcmp": 312, "setns": 308,
               "unshare": 272, "mount": 165, "umount2": 166, "pivot_root": 155,
               "open_tree": 428, "move_mount": 429, "fsopen": 430, "mount_setattr": 442,
               "open_by_handle_at": 304, "keyctl": 250, "add_key": 248, "request_key": 249,
               "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425,
               "io_uring_enter": 426, "io_uring_register": 427, "clone": 56, "clone3": 435,
               "ioctl": 16, "getpid": 39},
    "aarch64": {"ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
                "pidfd_open": 434, "pidfd_getfd": 438, "kcmp": 272, "setns": 268,
                "unshare": 97, "mount": 40, "umount2": 39, "pivot_root": 41,
                "open_tree": 428, "move_mount": 429, "fsopen": 430, "mount_setattr": 442,
                "open_by_handle_at": 265, "keyctl": 219, "add_key": 217, "request_key": 218,
                "bpf": 280, "perf_event_open": 241, "userfaultfd": 282, "io_uring_setup": 425,
                "io_uring_enter": 426, "io_uring_register": 427, "clone": 220, "clone3": 435,
                "ioctl": 29, "getpid": 172},
}


def syscalls(calls):
    """Each [name, arg...] called raw; {name: "ok" or the errno name}. A clone that succeeds
    forks this process: the child leaves at once."""
    table = SYSCALLS[platform.machine()]
    out = {}
    for name, *args in calls:
        ctypes.set_errno(0)
        result = libc.syscall(ctypes.c_long(table[name]), *(ctypes.c_long(a) for a in args))
        if result == 0 and name == "clone":
            os._exit(0)
        if result == -1:
            out[name] = errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
        else:
            out[name] = "ok"
            if name == "clone":
                os.waitpid(result, 0)
    return {"ok": True, "results": out}


def tiocsti(fd, char):
    """Push a character into the input of terminal `fd` (what the caller's shell reads next)."""
    import fcntl
    import termios
    fcntl.ioctl(fd, termios.TIOCSTI, char.encode())
    return {"ok": True}


PTRACE_PEEKDATA, PTRACE_POKEDATA, PTRACE_GETREGS, PTRACE_SETREGS = 2, 5, 12, 13
PTRACE_ATTACH, PTRACE_DETACH, PTRACE_SINGLESTEP = 16, 17, 9


class Regs(ctypes.Structure):  # struct user_regs_struct, x86_64
    _fields_ = [(n, ctypes.c_ulonglong) for n in (
        "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags "
        "rsp ss fs_base gs_base ds es fs gs").split()]


def _ptrace(request, pid, addr=0, data=0):
    ctypes.set_errno(0)
    result = libc.ptrace(request, pid, ctypes.c_void_p(addr), ctypes.c_void_p(data))
    err = ctypes.get_errno()
    if result == -1 and err:
        raise OSError(err, os.strerror(err))
    return result


def signal(pid, sig):
    os.kill(pid, sig)
    return {"ok": True}


def ptrace_attach(pid):
    _ptrace(PTRACE_ATTACH, pid)
    os.waitpid(pid, 0x40000000)  # __WALL
    _ptrace(PTRACE_DETACH, pid)
    return {"ok": True}


def hijack(pid, port, request):
    """Make process `pid` (stopped in a syscall) connect to 127.0.0.1:port in *its* network
    namespace, send `request` and read the answer: syscalls injected with ptrace (x86_64)."""
    if platform.machine() != "x86_64":
        return {"ok": False, "error": "unsupported"}
    _ptrace(PTRACE_ATTACH, pid)
    os.waitpid(pid, 0x40000000)
    saved = Regs()
    _ptrace(PTRACE_GETREGS, pid, 0, ctypes.addressof(saved))
    syscall_at = saved.rip - 2
    word = _ptrace(PTRACE_PEEKDATA, pid, syscall_at) & 0xFFFF
    if word != 0x050F:  # the `syscall` instruction the process is stopped after
        _ptrace(PTRACE_DETACH, pid)
        return {"ok": False, "error": "not in a syscall"}

    def call(nr, *args):
        regs = Regs.from_buffer_copy(saved)
        regs.rax, regs.orig_rax, regs.rip = nr, 2**64 - 1, syscall_at  # orig_rax -1: no restart
        for name, value in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args):
            setattr(regs, name, value % 2**64)
        _ptrace(PTRACE_SETREGS, pid, 0, ctypes.addressof(regs))
        _ptrace(PTRACE_SINGLESTEP, pid)
        os.waitpid(pid, 0x40000000)
        _ptrace(PTRACE_GETREGS, pid, 0, ctypes.addressof(regs))
        result = ctypes.c_longlong(regs.rax).value
        if -4096 < result < 0:
            raise OSError(-result, "injected syscall %d: %s" % (nr, os.strerror(-result)))
        return result

    def poke(addr, data):
        data += b"\0" * (-len(data) % 8)
        for i in range(0, len(data), 8):
            _ptrace(PTRACE_POKEDATA, pid, addr + i, int.from_bytes(data[i:i + 8], "little"))

    def peek(addr, size):
        out = b""
        for i in range(0, size, 8):
            out += (_ptrace(PTRACE_PEEKDATA, pid, addr + i) % 2**64).to_bytes(8, "little")
        return out[:size]

    try:
        page = call(9, 0, 65536, 3, 0x22, -1, 0)  # mmap(RW, private|anonymous)
        try:
            poke(page, struct.pack("<HH4s8x", socket.AF_INET, socket.htons(port),
                                   socket.inet_aton("127.0.0.1")))
            poke(page + 64, request.encode())
            fd = call(41, socket.AF_INET, socket.SOCK_STREAM, 0)  # socket
            try:
                call(42, fd, page, 16)  # connect
                call(1, fd, page + 64, len(request))  # write
                received = 0
                for _ in range(64):
                    n = call(0, fd, page + 4096 + received, 60000 - received)  # read
                    if n == 0 or received + n >= 60000:
                        received += n
                        break
                    received += n
                answer = peek(page + 4096, received)
            finally:
                call(3, fd)  # close
        finally:
            call(11, page, 65536)  # munmap
    finally:
        _ptrace(PTRACE_SETREGS, pid, 0, ctypes.addressof(saved))
        _ptrace(PTRACE_DETACH, pid)
    return {"ok": True, "answer": answer.decode("latin-1")}


def sleep(seconds):
    print(json.dumps({"ok": True, "pid": os.getpid(), "netns": os.readlink("/proc/self/ns/net"),
                      "bundle": os.environ.get("SSL_CERT_FILE")}), flush=True)
    time.sleep(seconds)
    return {"ok": True, "slept": seconds}


def main():
    action = json.loads(sys.argv[1])
    op = action.pop("op")
    try:
        result = globals()[op](**action)
    except Exception as exc:  # the point is to report what failed
        result = {"ok": False, "error": error(exc)}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
