"""Memory of a long WebSocket: proxy RSS per MiB relayed through one intercepted connection.

A WebSocket sink listens on the upstream address (the `websockets` library, in a thread of the
harness, TLS from the bench test CA) and acknowledges every message. The client sends N MiB
in 1 MiB binary messages through the proxy, one at a time, and samples the proxy's RSS every
16 messages; after the connection closes it reads RSS once more. A proxy that streams
messages stays flat; one that keeps them (mitmproxy's default: every message stays on the
flow) grows by about the volume relayed.

egress runs with a rule of its own for the sink's port (`methods: [GET]`, so the connection is
intercepted and every message passes egress's checks); mitmdump-mitm, in a full run, shows
mitmproxy's default.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.contenders import LISTEN, SKILL, issue_token
from bench.procs import Service, Supervisor, free_port, rss_kb
from bench.upstream import UPSTREAM_IP, TestCA

__all__ = ["WsMemoryResult", "egress_for_websocket", "relay", "websocket_sink"]

MESSAGE = 2**20  # bytes per message: under egress's default cap (4 MiB)


@dataclass(frozen=True)
class WsMemoryResult:
    mib: int  # relayed, client to upstream
    seconds: float
    rss_before_mb: float
    peak_rss_mb: float
    rss_closed_mb: float  # a second after the connection closed
    problem: str | None = None

    @property
    def kib_per_mib(self) -> float:
        """RSS growth while relaying, per MiB relayed."""
        return (self.peak_rss_mb - self.rss_before_mb) * 1024 / max(self.mib, 1)

    @property
    def mb_per_s(self) -> float:
        return self.mib / self.seconds if self.seconds else 0.0


@contextmanager
def websocket_sink(ca: TestCA) -> Iterator[int]:
    """A TLS WebSocket server on UPSTREAM_IP that acknowledges each message; yields its port."""
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    port = free_port(UPSTREAM_IP)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(ca.cert_pem), str(ca.key_pem))
    context.set_alpn_protocols(["http/1.1"])
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: asyncio.Event | None = None

    async def handle(ws: ServerConnection) -> None:
        try:
            async for message in ws:
                await ws.send(str(len(message)))
        except ConnectionClosed:
            pass

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        async with serve(handle, UPSTREAM_IP, port, ssl=context, max_size=None,
                         compression=None, ping_interval=None):
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("WebSocket sink did not start")
    try:
        yield port
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)
        if not thread.is_alive():
            loop.close()


def egress_for_websocket(sup: Supervisor, work: Path, egress: str, ca: TestCA,
                         port: int) -> tuple[Service, str, Path]:
    """egress with one intercepted rule for the sink; (service, proxy URL, CA to trust)."""
    root = work / "egress-ws"
    policies = root / "policies"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "bench.yaml").write_text(f"""settings:
  networks:
    allow: ["{UPSTREAM_IP}/32"]
  upstream_ca: {ca.ca_pem}
skills:
  {SKILL}:
    allow:
      - host: {UPSTREAM_IP}
        ports: [{port}]
        methods: [GET]
""")
    data = root / "data"
    token = issue_token(egress, data)
    listen = free_port(LISTEN)
    service = sup.start("egress-ws", [
        egress, "serve", "--policies", str(policies), "--data-dir", str(data),
        "--listen", f"{LISTEN}:{listen}", "--admin", f"{LISTEN}:{free_port(LISTEN)}"],
        ready=(LISTEN, listen))
    ca_cert = data / "ca" / "mitmproxy-ca-cert.pem"
    return service, f"http://{SKILL}:{token}@{LISTEN}:{listen}", ca_cert


def relay(service: Service, proxy: str, trust: Path, port: int, mib: int) -> WsMemoryResult:
    """Send `mib` MiB through `proxy` to the sink on `port`, one acknowledged message at a time."""
    from websockets.asyncio.client import connect

    block = os.urandom(MESSAGE)
    context = ssl.create_default_context(cafile=str(trust))
    url = f"wss://{UPSTREAM_IP}:{port}/ws"
    before = rss_kb(service.pgid) / 1024
    peak = before

    async def run() -> None:
        nonlocal peak
        async with connect(url, ssl=context, proxy=proxy, max_size=None, compression=None,
                           ping_interval=None, open_timeout=30) as ws:
            for i in range(mib * 2**20 // MESSAGE):
                await ws.send(block)
                await ws.recv()
                if i % 16 == 0:
                    peak = max(peak, rss_kb(service.pgid) / 1024)

    started = time.monotonic()
    problem = None
    try:
        asyncio.run(asyncio.wait_for(run(), 600))
    except Exception as exc:  # report it in the table; the run goes on
        problem = f"{type(exc).__name__}: {exc}"[:160]
    seconds = time.monotonic() - started
    peak = max(peak, rss_kb(service.pgid) / 1024)
    time.sleep(1.0)
    return WsMemoryResult(mib, seconds, before, peak, rss_kb(service.pgid) / 1024, problem)
