"""egress/proxy/sniff.py reads a ClientHello as mitmproxy's `parse_client_hello` does.

Both front ends choose a tunnel's layer from `sniff`; the fast path must not import mitmproxy's
TLS module for it, so sniff.py joins the records itself and decodes with mitmproxy's generated
parser. Here real ClientHellos (with and without SNI, split over several records, cut short,
with bytes flipped) go through both readers, which must agree: incomplete, malformed, or
complete with the same SNI.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy.proxy.layers.tls import parse_client_hello as mitmproxy_parse

from egress.proxy.sniff import parse_client_hello
from tests.clients import client_hello

HELLOS = [client_hello("api.example.com"), client_hello(None), client_hello("xn--bcher-kva.ch"),
          client_hello("a.b", ["h2", "http/1.1"]), client_hello("127.0.0.1")]


def rerecord(hello: bytes, cuts: list[int]) -> bytes:
    """The handshake message of `hello` spread over several TLS records, cut at `cuts`."""
    body = hello[5:5 + struct.unpack("!H", hello[3:5])[0]]
    pieces, start = [], 0
    for cut in sorted(set(c for c in cuts if 0 < c < len(body))):
        pieces.append(body[start:cut])
        start = cut
    pieces.append(body[start:])
    return b"".join(b"\x16\x03\x01" + struct.pack("!H", len(p)) + p for p in pieces)


def outcome(parse, data: bytes) -> tuple[str, str | None]:  # type: ignore[no-untyped-def]
    try:
        hello = parse(data)
    except ValueError:
        return "malformed", None
    return ("incomplete", None) if hello is None else ("complete", hello.sni)


@pytest.mark.parametrize("hello", HELLOS)
def test_whole_hellos_read_alike(hello: bytes) -> None:
    assert outcome(parse_client_hello, hello) == outcome(mitmproxy_parse, hello)
    assert outcome(parse_client_hello, hello)[0] == "complete"


@settings(max_examples=400, deadline=None, database=None)
@given(st.sampled_from(HELLOS), st.lists(st.integers(1, 600), max_size=6),
       st.integers(0, 4000), st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 255)),
                                      max_size=3))
def test_split_cut_and_flipped_hellos_read_alike(hello: bytes, cuts: list[int], keep: int,
                                                  flips: list[tuple[int, int]]) -> None:
    data = bytearray(rerecord(hello, cuts))[:keep]
    for at, value in flips:
        if at < len(data):
            data[at] = value
    assert outcome(parse_client_hello, bytes(data)) == outcome(mitmproxy_parse, bytes(data))
