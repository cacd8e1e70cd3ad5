"""Terminal injection: a hostile skill puts escape sequences into what `egress denials` prints.

The skill controls a denied request's path. mitmproxy accepts ESC, BEL and DEL in an
absolute-form plain-HTTP target, and any byte (C1 controls, bidi overrides as UTF-8, bytes
that are not UTF-8 at all) in an origin-form target inside a tunnel. Each attack goes through
the real egress; the test then runs the real `egress denials` in every output mode and checks
that no byte a terminal acts on comes out, while the audit record keeps the path exactly.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import unicodedata

from tests.adversarial.conftest import AdvWorld
from tests.adversarial.test_world import open_tunnel
from tests.clients import basic, read_response
from tests.proxy import EGRESS

_TERMINAL_BYTES = (b"\x1b", b"\x07", b"\x7f", b"\xc2\x9b", b"\xc2\x85", b"\xe2\x80\xae",
                   b"\xe2\x80\x8b")
_MODES = ([], ["--json"], ["--by", "host"], ["--by", "reason", "--json"])


def terminal_safe(text: str) -> bool:
    return all(ch == "\n" or (ch.isprintable() and unicodedata.category(ch) not in
                              {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}) for ch in text)


def denials_output(adv: AdvWorld, args: list[str]) -> bytes:
    return subprocess.run([EGRESS, "denials", "--data-dir", str(adv.proxy.data_dir),
                           "--skill", "mallory", *args],
                          capture_output=True, timeout=30, check=True).stdout


def assert_safe_everywhere(adv: AdvWorld) -> bytes:
    raw = adv.proxy.audit_path.read_bytes()
    assert raw.isascii()  # `tail -f audit.jsonl` is safe too
    table = b""
    for args in _MODES:
        out = denials_output(adv, args)
        assert not any(b in out for b in _TERMINAL_BYTES), (args, out)
        assert terminal_safe(out.decode("utf-8")), (args, out)
        if not args:
            table = out
    return table


def test_ansi_escapes_in_a_plain_http_path(adv: AdvWorld) -> None:
    path = b"/deny\x1b]0;owned\x07\x1b[2J\x1b[31mRED\x7f"
    with socket.create_connection(adv.proxy_addr, timeout=10) as sock:
        sock.sendall(b"GET http://other.adv.test:%d%s HTTP/1.1\r\nHost: other.adv.test:%d\r\n"
                     b"Proxy-Authorization: %s\r\n\r\n"
                     % (adv.plain.port, path, adv.plain.port,
                        basic("mallory", adv.proxy.tokens["mallory"]).encode()))
        resp = read_response(sock)
    assert resp.status == 400, resp  # control characters in a target: refused before policy
    record = adv.proxy.audit_for(resp.request_id)
    assert record["reason"] == "bad_request_target"
    assert record["path"] == path.decode()  # the attack reached the log intact
    table = assert_safe_everywhere(adv)
    assert b"/deny\\x1b]0;owned\\x07\\x1b[2J\\x1b[31mRED\\x7f" in table


def test_c1_bidi_and_invalid_utf8_in_an_intercepted_path(adv: AdvWorld) -> None:
    # Inside the tunnel mitmproxy takes any byte in an origin-form target.
    path = b"/v1/x\xc2\x9b31m\xc2\x85\xe2\x80\xaeexe.txt\xe2\x80\x8b\x9b\xff"
    raw = open_tunnel(adv, "api.adv.test", adv.tls.port)
    ctx = ssl.create_default_context(cafile=adv.bundle)
    # ALPN names HTTP/1.1, so egress hands the session to its HTTP layer at once (without it,
    # egress first waits for a request line it can prove is HTTP/1, and this one is not ASCII).
    ctx.set_alpn_protocols(["http/1.1"])
    with ctx.wrap_socket(raw, server_hostname="api.adv.test") as s:
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: api.adv.test:%d\r\n\r\n" % adv.tls.port)
        resp = read_response(s)
    assert resp.status == 403, resp
    record = adv.proxy.audit_for(resp.request_id)
    assert record["reason"] == "path_not_canonical"  # non-ASCII bytes are not a plain spelling
    # The bytes that are not UTF-8 arrive as lone surrogates (mitmproxy's surrogateescape).
    assert record["path"] == path.decode("utf-8", "surrogateescape")
    table = assert_safe_everywhere(adv)
    assert b"/v1/x\\x9b31m\\x85\\u202eexe.txt\\u200b\\udc9b\\udcff" in table
