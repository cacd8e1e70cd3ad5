"""What a skill might try, run inside `egress exec` by the jail tests (stdlib only, any Python 3).

    python3 probe.py '{"op": "tcp", "host": "10.200.1.2", "port": 8000}'

Prints one JSON object: {"ok": true, ...} or {"ok": false, "error": "ENETUNREACH"} (an errno
name, "timeout", or an exception class name).
"""

import errno
import json
import os
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
