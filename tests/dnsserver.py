"""A real authoritative DNS server for tests, built on dnspython, on 127.0.0.1 (UDP and TCP).

    from tests.dnsserver import dns_server  # the fixture; or `with DnsServer() as server:`

    async def test_x(dns_server):
        dns_server.set("api.egress.test", ["127.0.0.2", "::1"], ttl=60)
        resolver = DnsResolver([dns_server.address])   # "127.0.0.1:PORT"
        ...
        assert dns_server.queries["api.egress.test"] == 2   # one A, one AAAA

Every server starts with the zone below (names under ``egress.test``, reserved for testing by
RFC 6761); any name not set answers NXDOMAIN. Each query is counted per name (``queries``)
and per (name, type) (``count(name, "A")``), and logged in arrival order (``log``).
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

__all__ = [
    "ALIAS",
    "ALLOWED",
    "ALLOWED_ADDRESS",
    "LOOPBACK",
    "MAPPED",
    "METADATA",
    "MISSING",
    "MIXED",
    "NAT64",
    "NODATA",
    "REBIND",
    "SERVFAIL",
    "SILENT",
    "SIXTOFOUR",
    "TEREDO",
    "ZONE",
    "DnsServer",
    "dns_server",
]

ZONE = "egress.test"
ALLOWED_ADDRESS = "127.0.0.2"  # the loopback address test policies open with networks.allow
ALLOWED = f"allowed.{ZONE}"  # -> 127.0.0.2
LOOPBACK = f"loopback.{ZONE}"  # -> 127.0.0.1
METADATA = f"metadata.{ZONE}"  # -> 169.254.169.254
MIXED = f"mixed.{ZONE}"  # -> 127.0.0.2 and 127.0.0.1
MAPPED = f"mapped.{ZONE}"  # -> AAAA ::ffff:127.0.0.1
NAT64 = f"nat64.{ZONE}"  # -> AAAA 64:ff9b::7f00:1
SIXTOFOUR = f"sixtofour.{ZONE}"  # -> AAAA 2002:7f00:1::1
TEREDO = f"teredo.{ZONE}"  # -> AAAA Teredo, client 127.0.0.1
ALIAS = f"alias.{ZONE}"  # CNAME -> loopback.egress.test
REBIND = f"rebind.{ZONE}"  # TTL 0; first A query 127.0.0.2, then 127.0.0.1 on every later one
NODATA = f"nodata.{ZONE}"  # exists (TXT) but has no A/AAAA
SERVFAIL = f"servfail.{ZONE}"  # answers SERVFAIL
SILENT = f"silent.{ZONE}"  # never answers (the query is dropped)
MISSING = f"missing.{ZONE}"  # NXDOMAIN

_TCP_IDLE = 1.0  # seconds a TCP client may stay silent before the server hangs up


@dataclass(frozen=True)
class _Behaviour:
    kind: str  # "answers" | "rcode" | "drop" | "cname" | "txt"
    answers: tuple[tuple[str, ...], ...] = ()  # one tuple of addresses per query, the last repeats
    ttl: int = 60
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR
    target: str = ""


def _norm(name: str) -> str:
    return name.lower().rstrip(".")


class DnsServer:
    """An authoritative server for test names; start/stop with ``with`` (or start()/stop())."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: dict[str, _Behaviour] = {}
        self._by_type: Counter[tuple[str, str]] = Counter()
        self.queries: Counter[str] = Counter()
        self.log: list[tuple[str, str, str]] = []  # (name, type, "udp" | "tcp") in arrival order
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []
        self.port = 0
        self._install_zone()

    # -- records ------------------------------------------------------------------------------

    def _install_zone(self) -> None:
        self.set(ALLOWED, [ALLOWED_ADDRESS])
        self.set(LOOPBACK, ["127.0.0.1"])
        self.set(METADATA, ["169.254.169.254"])
        self.set(MIXED, [ALLOWED_ADDRESS, "127.0.0.1"])
        self.set(MAPPED, ["::ffff:127.0.0.1"])
        self.set(NAT64, ["64:ff9b::7f00:1"])
        self.set(SIXTOFOUR, ["2002:7f00:1::1"])
        self.set(TEREDO, ["2001:0:4136:e378:8000:63bf:80ff:fffe"])
        self.set_cname(ALIAS, LOOPBACK)
        self.set_sequence(REBIND, [[ALLOWED_ADDRESS], ["127.0.0.1"]], ttl=0)
        self.set_rcode(SERVFAIL, "SERVFAIL")
        self.set_silent(SILENT)
        with self._lock:
            self._names[NODATA] = _Behaviour("txt")

    def set(self, name: str, addresses: Sequence[str], ttl: int = 60) -> None:
        """Answer A/AAAA queries for ``name`` with ``addresses`` (IPv4 and IPv6 mixed freely)."""
        self.set_sequence(name, [addresses], ttl=ttl)

    def set_sequence(self, name: str, answers: Sequence[Sequence[str]], ttl: int = 0) -> None:
        """Answer the n-th query of each type with ``answers[n]``; the last answer repeats."""
        with self._lock:
            self._names[_norm(name)] = _Behaviour("answers", tuple(tuple(a) for a in answers), ttl)

    def set_rcode(self, name: str, rcode: str) -> None:
        """Answer every query for ``name`` with an error rcode (``"SERVFAIL"``, ``"REFUSED"``, ...)."""
        with self._lock:
            self._names[_norm(name)] = _Behaviour("rcode", rcode=dns.rcode.from_text(rcode))

    def set_silent(self, name: str) -> None:
        """Never answer queries for ``name``."""
        with self._lock:
            self._names[_norm(name)] = _Behaviour("drop")

    def set_cname(self, name: str, target: str, ttl: int = 60) -> None:
        """``name`` is a CNAME for ``target`` (answered with the target's records, if known)."""
        with self._lock:
            self._names[_norm(name)] = _Behaviour("cname", ttl=ttl, target=_norm(target))

    def remove(self, name: str) -> None:
        """Forget ``name``: it answers NXDOMAIN from now on."""
        with self._lock:
            self._names.pop(_norm(name), None)

    def count(self, name: str, rdtype: str) -> int:
        """How many queries of type ``rdtype`` (``"A"``, ``"AAAA"``) arrived for ``name``."""
        with self._lock:
            return self._by_type[(_norm(name), rdtype)]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- answering ----------------------------------------------------------------------------

    def answer(self, wire: bytes, transport: str) -> bytes | None:
        """The response to one query in wire format, or None to stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if len(query.question) != 1:
            return None
        question = query.question[0]
        name = _norm(question.name.to_text())
        rdtype = dns.rdatatype.to_text(question.rdtype)
        with self._lock:
            self.queries[name] += 1
            self._by_type[(name, rdtype)] += 1
            self.log.append((name, rdtype, transport))
            index = self._by_type[(name, rdtype)] - 1
            behaviour = self._names.get(name)
            target = self._names.get(behaviour.target) if behaviour and behaviour.kind == "cname" else None
        if behaviour is not None and behaviour.kind == "drop":
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if behaviour is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            self._add_soa(response)
        elif behaviour.kind == "rcode":
            response.set_rcode(behaviour.rcode)
        elif behaviour.kind == "cname":
            response.answer.append(
                dns.rrset.from_text(question.name, behaviour.ttl, "IN", "CNAME", behaviour.target + ".")
            )
            if target is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
            else:
                self._add_addresses(response, dns.name.from_text(behaviour.target), rdtype, target, 0)
        else:
            self._add_addresses(response, question.name, rdtype, behaviour, index)
        if not response.answer and response.rcode() == dns.rcode.NOERROR:
            self._add_soa(response)  # NODATA
        max_size = 65535 if transport == "tcp" else max(512, query.payload)
        try:
            return response.to_wire(max_size=max_size)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.AA | dns.flags.TC
            return truncated.to_wire()

    @staticmethod
    def _add_addresses(
        response: dns.message.Message, owner: dns.name.Name, rdtype: str, behaviour: _Behaviour, index: int
    ) -> None:
        if behaviour.kind != "answers" or rdtype not in ("A", "AAAA"):
            return
        chosen = behaviour.answers[min(index, len(behaviour.answers) - 1)]
        wanted = [a for a in chosen if (":" in a) == (rdtype == "AAAA")]
        if wanted:
            response.answer.append(dns.rrset.from_text_list(owner, behaviour.ttl, "IN", rdtype, wanted))

    @staticmethod
    def _add_soa(response: dns.message.Message) -> None:
        soa = f"ns.{ZONE}. hostmaster.{ZONE}. 1 60 60 60 5"
        response.authority.append(dns.rrset.from_text(ZONE + ".", 5, "IN", "SOA", soa))

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        server = self

        class UdpHandler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = server.answer(data, "udp")
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        class TcpHandler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn: socket.socket = self.request
                conn.settimeout(_TCP_IDLE)
                try:
                    for _ in range(100):  # a client may send several queries on one connection
                        length = _recv_exactly(conn, 2)
                        if length is None:
                            return
                        data = _recv_exactly(conn, int.from_bytes(length, "big"))
                        if data is None:
                            return
                        reply = server.answer(data, "tcp")
                        if reply is not None:
                            conn.sendall(len(reply).to_bytes(2, "big") + reply)
                except OSError:
                    return

        # UDP first on port 0, then TCP on the same port; another process may hold that TCP
        # port, so try a bounded number of times.
        for _ in range(20):
            udp = socketserver.UDPServer(("127.0.0.1", 0), UdpHandler)
            port = udp.server_address[1]
            try:
                tcp = _ThreadingTCPServer(("127.0.0.1", port), TcpHandler)
            except OSError:
                udp.server_close()
                continue
            break
        else:
            raise RuntimeError("no free port for both UDP and TCP on 127.0.0.1")
        self.port = port
        self._servers = [udp, tcp]
        for srv in self._servers:
            thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        for srv in self._servers:
            srv.shutdown()  # returns once serve_forever has stopped (within poll_interval)
            srv.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []

    def __enter__(self) -> DnsServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _ThreadingTCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    block_on_close = True  # server_close() waits for handlers, each bounded by _TCP_IDLE


def _recv_exactly(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    """A running ``DnsServer`` with the built-in zone, stopped after the test."""
    with DnsServer() as server:
        yield server
