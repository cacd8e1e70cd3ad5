"""Memory under load: many idle tunnels, and one long streamed transfer.

* Idle tunnels: open N client connections through the proxy, each a CONNECT, a TLS handshake
  (end to end, or with the proxy when it intercepts) and one request, so the proxy holds both
  the client and the upstream side; then leave them idle and read the proxy's RSS.
* Streaming: download a 1 GiB file through the proxy with curl while sampling RSS every
  100 ms; a proxy that streams stays flat, one that buffers grows by the file's size.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import resource
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from bench.load import curl
from bench.procs import Service, peak_rss_kb, reset_peak, rss_kb

__all__ = ["IdleResult", "StreamResult", "idle_tunnels", "stream"]


@dataclass(frozen=True)
class IdleResult:
    tunnels: int  # tunnels that were open at the measurement
    wanted: int
    rss_before_mb: float
    rss_idle_mb: float
    rss_closed_mb: float  # a few seconds after every tunnel was closed
    seconds_to_open: float
    problem: str | None = None

    @property
    def kb_per_tunnel(self) -> float:
        return (self.rss_idle_mb - self.rss_before_mb) * 1024 / max(self.tunnels, 1)


@dataclass(frozen=True)
class StreamResult:
    bytes: int
    seconds: float
    rss_before_mb: float
    peak_rss_mb: float
    rss_after_mb: float
    status: int

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1048576 / self.seconds if self.seconds else 0.0


def raise_fd_limit(wanted: int) -> None:
    """Raise this process's open-files limit (the proxies it starts inherit it); as root the
    hard limit too, so that 10,000 tunnels (two descriptors each in a proxy) fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return
        except (ValueError, OSError):
            pass  # not root: as far as the hard limit goes
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


@functools.cache
def _client_context() -> ssl.SSLContext:
    """One context for every tunnel: create_default_context() loads the system CAs each time
    (~1.4 MB and milliseconds per tunnel in this process, which made 10,000 tunnels need
    ~14 GB here), and these clients verify nothing anyway."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _open_tunnel(proxy: str, host: str, port: int, path: str,
                       headers: dict[str, str]
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    p = urlsplit(proxy)
    reader, writer = await asyncio.open_connection(p.hostname, p.port)
    auth = ""
    if p.username is not None:
        creds = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
        auth = f"Proxy-Authorization: Basic {base64.b64encode(creds).decode()}\r\n"
    writer.write(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
        writer.close()
        raise RuntimeError(f"CONNECT refused: {head.splitlines()[0]!r}")
    await writer.start_tls(_client_context(), server_hostname=None)
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"request refused: {head.splitlines()[0]!r}")
    return reader, writer


async def _idle(service: Service, proxy: str, host: str, port: int, path: str,
                headers: dict[str, str], count: int, settle: float) -> IdleResult:
    before = rss_kb(service.pgid) / 1024
    gate = asyncio.Semaphore(100)
    problems: list[str] = []

    async def one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        async with gate:
            try:
                return await asyncio.wait_for(_open_tunnel(proxy, host, port, path, headers), 30)
            except (OSError, RuntimeError, TimeoutError, asyncio.IncompleteReadError,
                    ssl.SSLError) as exc:
                problems.append(f"{type(exc).__name__}: {exc}"[:160])
                return None

    started = time.monotonic()
    opened = [t for t in await asyncio.gather(*(one() for _ in range(count))) if t is not None]
    took = time.monotonic() - started
    await asyncio.sleep(settle)  # let the proxy finish its bookkeeping before reading RSS
    idle = rss_kb(service.pgid) / 1024
    for _, writer in opened:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in opened), return_exceptions=True)
    await asyncio.sleep(settle)
    closed = rss_kb(service.pgid) / 1024
    return IdleResult(len(opened), count, before, idle, closed, took,
                      f"{len(problems)} failed, e.g. {problems[0]}" if problems else None)


def idle_tunnels(service: Service, proxy: str, host: str, port: int, path: str,
                 headers: dict[str, str], count: int, settle: float = 2.0) -> IdleResult:
    raise_fd_limit(count * 2 + 256)
    return asyncio.run(_idle(service, proxy, host, port, path, headers, count, settle))


def stream(service: Service, url: str, proxy: str, cacert: str,
           headers: dict[str, str]) -> StreamResult:
    """Download `url` through the proxy; RSS before, peak during (VmHWM), and after."""
    before = rss_kb(service.pgid) / 1024
    reset_ok = reset_peak(service.pgid)
    peak = [before]
    done = threading.Event()

    def sample() -> None:  # a fallback where VmHWM cannot be reset
        while not done.wait(0.1):
            peak[0] = max(peak[0], rss_kb(service.pgid) / 1024)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        seconds, size, status = curl(url, proxy=proxy, cacert=cacert, headers=headers)
    finally:
        done.set()
        sampler.join()
    hwm = peak_rss_kb(service.pgid) / 1024 if reset_ok else 0.0
    return StreamResult(size, seconds, before, max(peak[0], hwm), rss_kb(service.pgid) / 1024,
                        status)
