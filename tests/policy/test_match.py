"""Host normalisation, host patterns, the per-skill host index and path globs."""

from __future__ import annotations

import re

import pytest

from egress.policy.match import (
    HostPattern,
    normalise_host,
    normalise_path,
    parse_host_pattern,
    parse_path_pattern,
    path_matches,
)
from egress.policy.model import HostIndex, Rule, Source


# -- normalise_host ------------------------------------------------------------------------
@pytest.mark.parametrize("raw, canonical", [
    pytest.param("API.Example.COM.", "api.example.com", id="uppercase and trailing dot fold away"),
    pytest.param("  api.example.com ", "api.example.com", id="surrounding whitespace is dropped"),
    pytest.param("bücher.example", "xn--bcher-kva.example", id="unicode name becomes IDNA"),
    pytest.param("BÜCHER.Example.", "xn--bcher-kva.example", id="unicode uppercase folds before IDNA"),
    pytest.param("xn--bcher-kva.example", "xn--bcher-kva.example", id="punycode stays as written"),
    pytest.param("_dmarc.example.com", "_dmarc.example.com", id="underscore labels are accepted"),
    pytest.param("localhost", "localhost", id="a single label is a host"),
    pytest.param("127.0.0.1", "127.0.0.1", id="dotted quad stays"),
    pytest.param("0x7f.1", "127.0.0.1", id="hex and short IPv4 spelling is canonicalised"),
    pytest.param("2130706433", "127.0.0.1", id="integer IPv4 spelling is canonicalised"),
    pytest.param("0177.0.0.1", "127.0.0.1", id="octal IPv4 spelling is canonicalised"),
    pytest.param("127.1", "127.0.0.1", id="two-part IPv4 spelling is canonicalised"),
    pytest.param("[::1]", "::1", id="bracketed IPv6 loses its brackets"),
    pytest.param("[0:0:0:0:0:0:0:1]", "::1", id="long IPv6 is compressed"),
    pytest.param("2001:DB8::1", "2001:db8::1", id="IPv6 is lowercased"),
])
def test_normalise_host(raw: str, canonical: str) -> None:
    assert normalise_host(raw) == canonical


@pytest.mark.parametrize("raw, message", [
    pytest.param("", "empty host", id="empty"),
    pytest.param("   ", "empty host", id="only whitespace"),
    pytest.param("a..example.com", "label '' is not a valid DNS label", id="empty label"),
    pytest.param("example.com..", "label '' is not a valid DNS label", id="two trailing dots"),
    pytest.param(".", "label '' is not a valid DNS label", id="only a dot"),
    pytest.param("-api.example.com", "label '-api' is not a valid DNS label",
                 id="label starting with a hyphen"),
    pytest.param("api-.example.com", "label 'api-' is not a valid DNS label",
                 id="label ending with a hyphen"),
    pytest.param("ex@mple.com", "label 'ex@mple' is not a valid DNS label",
                 id="punctuation inside a label"),
    pytest.param("a" * 64 + ".com", f"label {'a' * 64!r} is not a valid DNS label",
                 id="label longer than 63 characters"),
    pytest.param(".".join(["a" * 63] * 4), "host name longer than 253 characters",
                 id="name longer than 253 characters"),
    pytest.param("exa mple.com", "'exa mple.com' contains whitespace or control characters",
                 id="space inside the name"),
    pytest.param("example.com:443", "example.com:443 is not a valid IPv6 address",
                 id="host with a port"),
    pytest.param("[example.com]", "[example.com] is not a valid IPv6 address",
                 id="brackets around a name"),
    pytest.param("256.1.1.1", "256.1.1.1 looks like an IPv4 address but is not a valid one",
                 id="IPv4 octet out of range"),
    pytest.param("1.2.3.4.5", "1.2.3.4.5 looks like an IPv4 address but is not a valid one",
                 id="five numeric parts"),
])
def test_normalise_host_rejects(raw: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        normalise_host(raw)
    assert str(info.value) == message


def test_normalise_host_rejects_invalid_idna_naming_the_codepoint() -> None:
    with pytest.raises(ValueError) as info:
        normalise_host("☃.example")
    # The first part is ours; the parenthesis is the idna library's explanation.
    assert re.fullmatch(r"not a valid internationalised host name \(.*U\+2603.*\)",
                        str(info.value))


# -- parse_host_pattern --------------------------------------------------------------------
@pytest.mark.parametrize("text, pattern", [
    pytest.param("api.example.com", HostPattern("api.example.com", False), id="exact host"),
    pytest.param("API.Example.COM.", HostPattern("api.example.com", False),
                 id="exact host is normalised"),
    pytest.param("*.example.com", HostPattern("example.com", True),
                 id="wildcard is stored as its suffix"),
    pytest.param("*.Example.COM.", HostPattern("example.com", True),
                 id="wildcard suffix is normalised"),
    pytest.param("*.bücher.example", HostPattern("xn--bcher-kva.example", True),
                 id="wildcard over an IDNA domain"),
    pytest.param("10.0.0.1", HostPattern("10.0.0.1", False), id="IPv4 literal"),
    pytest.param("[::1]", HostPattern("::1", False), id="bracketed IPv6 literal"),
    pytest.param("::1", HostPattern("::1", False), id="bare IPv6 literal"),
])
def test_parse_host_pattern(text: str, pattern: HostPattern) -> None:
    assert parse_host_pattern(text) == pattern


_ANY_HOST = ("would allow every host; list the hosts the skill needs, "
             "e.g. api.example.com or *.example.com")
_STAR_LABEL = "'*' is only allowed as the whole first label, as in *.example.com"
_NOT_HOST = ("is not a host name; write only the host (ports go in `ports:`, "
             "paths in `paths:`)")


@pytest.mark.parametrize("text, message", [
    pytest.param("*", f"'*' {_ANY_HOST}", id="bare star allows everything"),
    pytest.param("*.", f"'*.' {_ANY_HOST}", id="star dot allows everything"),
    pytest.param("**", f"'**' {_ANY_HOST}", id="double star allows everything"),
    pytest.param("*.com", "'*.com' covers a whole top-level domain; name the domain, "
                          "e.g. *.example.com", id="wildcard over a top-level domain"),
    pytest.param("a.*.b", f"'a.*.b': {_STAR_LABEL}", id="star in a middle label"),
    pytest.param("exa*mple.com", f"'exa*mple.com': {_STAR_LABEL}", id="star inside a label"),
    pytest.param("*.*.example.com", f"'*.*.example.com': {_STAR_LABEL}",
                 id="two wildcard labels"),
    pytest.param("api.example.com/path", f"'api.example.com/path' {_NOT_HOST}",
                 id="host with a path"),
    pytest.param("https://api.example.com", f"'https://api.example.com' {_NOT_HOST}",
                 id="a URL instead of a host"),
    pytest.param("host:443", f"'host:443' {_NOT_HOST}", id="host with a port"),
    pytest.param("[::1]:443", f"'[::1]:443' {_NOT_HOST}", id="IPv6 literal with a port"),
    pytest.param("*.10.0.0.1", "'*.10.0.0.1': a wildcard cannot cover an IP address",
                 id="wildcard over an IPv4 address"),
    pytest.param("*.1.2.3", "'*.1.2.3': a wildcard cannot cover an IP address",
                 id="wildcard over a short IPv4 spelling"),
    pytest.param("", "'': empty host", id="empty host"),
    pytest.param("-bad.example.com", "'-bad.example.com': label '-bad' is not a valid DNS label",
                 id="invalid label"),
])
def test_parse_host_pattern_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_host_pattern(text)
    assert str(info.value) == message


# -- HostIndex -----------------------------------------------------------------------------
def _rules(*patterns: str) -> tuple[Rule, ...]:
    out = []
    for line, text in enumerate(patterns, start=1):
        p = parse_host_pattern(text)
        out.append(Rule(host=p.host, wildcard=p.wildcard, ports=frozenset({443}), methods=None,
                        paths=None, credential=None, source=Source("t.yaml", line)))
    return tuple(out)


def _labels(rules: tuple[Rule, ...]) -> list[str]:
    return [("*." if r.wildcard else "") + r.host for r in rules]


@pytest.mark.parametrize("patterns, host, matched", [
    pytest.param(["api.example.com"], "api.example.com", ["api.example.com"],
                 id="exact host matches itself"),
    pytest.param(["api.example.com"], "www.api.example.com", [],
                 id="exact host does not cover subdomains"),
    pytest.param(["api.example.com"], "example.com", [], id="exact host does not cover parent"),
    pytest.param(["*.example.com"], "a.example.com", ["*.example.com"],
                 id="wildcard matches one label"),
    pytest.param(["*.example.com"], "a.b.c.example.com", ["*.example.com"],
                 id="wildcard matches several labels"),
    pytest.param(["*.example.com"], "example.com", [], id="wildcard never matches the apex"),
    pytest.param(["*.example.com"], "evilexample.com", [],
                 id="wildcard does not match a lookalike without the dot"),
    pytest.param(["*.example.com"], "example.com.evil.test", [],
                 id="wildcard does not match the domain as a prefix"),
    pytest.param(["*.example.com"], "a.example.co", [], id="wildcard needs the whole suffix"),
    pytest.param(["*.example.com"], "com", [], id="wildcard does not match the TLD"),
    pytest.param(["*.example.com", "example.com"], "example.com", ["example.com"],
                 id="apex needs its own exact rule"),
    pytest.param(["*.example.com", "api.example.com"], "api.example.com",
                 ["api.example.com", "*.example.com"], id="exact rules come before wildcards"),
    pytest.param(["*.example.com", "*.api.example.com"], "v1.api.example.com",
                 ["*.api.example.com", "*.example.com"], id="nearest wildcard comes first"),
    pytest.param(["10.0.0.1"], "10.0.0.1", ["10.0.0.1"], id="IP literal matches exactly"),
    pytest.param(["*.example.com"], "10.0.0.1", [], id="IP literal never matches a wildcard"),
    pytest.param([], "example.com", [], id="no rules match nothing"),
])
def test_host_index_lookup(patterns: list[str], host: str, matched: list[str]) -> None:
    assert _labels(HostIndex(_rules(*patterns)).lookup(host)) == matched


# -- normalise_path ------------------------------------------------------------------------
@pytest.mark.parametrize("raw, canonical", [
    pytest.param("/v1/invoices", "/v1/invoices", id="plain path stays"),
    pytest.param("/", "/", id="root stays"),
    pytest.param("/v1/invoices/../charges", "/v1/charges", id="dot-dot climbs one segment"),
    pytest.param("/v1/invoices/%2e%2e/charges", "/v1/charges", id="encoded dot-dot climbs too"),
    pytest.param("/v1/invoices/%2E%2E/charges", "/v1/charges",
                 id="uppercase encoded dot-dot climbs too"),
    pytest.param("/v1/./invoices", "/v1/invoices", id="single dot segments vanish"),
    pytest.param("/v1//invoices", "/v1/invoices", id="empty segments vanish"),
    pytest.param("/v1/%69nvoices", "/v1/invoices", id="encoded letters are decoded"),
    pytest.param("/v1/invoices/", "/v1/invoices/", id="trailing slash is kept"),
    pytest.param("/v1/invoices/..", "/v1", id="dot-dot at the end climbs"),
    pytest.param("/v1/invoices?limit=10", "/v1/invoices", id="query is dropped"),
    pytest.param("/v1/invoices?next=%2F..%2F", "/v1/invoices",
                 id="escapes in the query do not matter"),
    pytest.param("/v1/invoices#top", "/v1/invoices", id="fragment is dropped"),
])
def test_normalise_path(raw: str, canonical: str) -> None:
    assert normalise_path(raw) == canonical


@pytest.mark.parametrize("raw", [
    pytest.param("/v1/a%2Fb", id="encoded slash is refused"),
    pytest.param("/v1/a%2fb", id="lowercase encoded slash is refused"),
    pytest.param("/v1/%252e%252e/charges", id="double-encoded dot-dot is refused"),
    pytest.param("/v1/%25", id="encoded percent is refused"),
    pytest.param("/v1\\..\\charges", id="backslash is refused"),
    pytest.param("/v1/a%5Cb", id="encoded backslash is refused"),
    pytest.param("/v1/a\x00b", id="NUL is refused"),
    pytest.param("/v1/a%00b", id="encoded NUL is refused"),
    pytest.param("/v1/a%0Ab", id="encoded control character is refused"),
    pytest.param("/v1/caf%C3%A9", id="encoded non-ASCII byte is refused"),
    pytest.param("/v1/%zz", id="bad escape is refused"),
    pytest.param("/v1/%2", id="truncated escape is refused"),
    pytest.param("/../etc/passwd", id="dot-dot above the root is refused"),
    pytest.param("/v1/../../etc", id="dot-dot climbing past the root later is refused"),
    pytest.param("v1/invoices", id="relative path is refused"),
    pytest.param("*", id="asterisk form is refused"),
    pytest.param("", id="empty path is refused"),
])
def test_normalise_path_refuses_untrustworthy_spellings(raw: str) -> None:
    assert normalise_path(raw) is None


# -- path patterns -------------------------------------------------------------------------
@pytest.mark.parametrize("pattern, path, matches", [
    pytest.param("/v1/invoices", "/v1/invoices", True, id="exact path matches"),
    pytest.param("/v1/invoices", "/v1/invoices/", True, id="trailing slash on the path is ignored"),
    pytest.param("/v1/invoices/", "/v1/invoices", True,
                 id="trailing slash on the pattern is ignored"),
    pytest.param("/v1/invoices", "/v1/invoices/in_1", False, id="exact path does not cover children"),
    pytest.param("/v1/invoices", "/v1/invoicesX", False, id="exact path is not a prefix"),
    pytest.param("/v1/invoices", "/v1", False, id="exact path does not cover its parent"),
    pytest.param("/v1/invoices/*", "/v1/invoices/in_1", True, id="star matches one segment"),
    pytest.param("/v1/invoices/*", "/v1/invoices", False, id="star needs a segment"),
    pytest.param("/v1/invoices/*", "/v1/invoices/", False, id="star does not match empty"),
    pytest.param("/v1/invoices/*", "/v1/invoices/in_1/lines", False,
                 id="star does not cross a slash"),
    pytest.param("/v1/*/lines", "/v1/in_1/lines", True, id="star in the middle"),
    pytest.param("/v1/*/lines", "/v1/in_1/items", False, id="segments after a star must match"),
    pytest.param("/v1/**", "/v1/a", True, id="double star matches one segment"),
    pytest.param("/v1/**", "/v1/a/b/c", True, id="double star matches any depth"),
    pytest.param("/v1/**", "/v1", False, id="double star needs at least one segment"),
    pytest.param("/v1/**", "/v2/a", False, id="double star keeps its prefix"),
    pytest.param("/**", "/anything/at/all", True, id="root double star matches everything"),
    pytest.param("/**", "/", False, id="root double star does not match the bare root"),
    pytest.param("/", "/", True, id="root matches root"),
    pytest.param("/", "/x", False, id="root does not cover children"),
    pytest.param("/*", "/", False, id="root star needs a segment"),
])
def test_path_matches(pattern: str, path: str, matches: bool) -> None:
    assert path_matches(pattern, path) is matches


@pytest.mark.parametrize("text", [
    pytest.param("/", id="root"),
    pytest.param("/v1/invoices", id="plain path"),
    pytest.param("/v1/invoices/*", id="star segment"),
    pytest.param("/v1/*/lines", id="star in the middle"),
    pytest.param("/v1/**", id="double star at the end"),
])
def test_parse_path_pattern_accepts(text: str) -> None:
    assert parse_path_pattern(text) == text


@pytest.mark.parametrize("text, message", [
    pytest.param("v1/invoices", "'v1/invoices' must start with '/'", id="relative path"),
    pytest.param("/v1?x=1", "'/v1?x=1': paths are matched without the query string; drop '?...'",
                 id="query string"),
    pytest.param("/v1#top", "'/v1#top': paths are matched without the query string; drop '?...'",
                 id="fragment"),
    pytest.param("/v1/**/x", "'/v1/**/x': '**' is only allowed as the last segment",
                 id="double star in the middle"),
    pytest.param("/v1/a*", "'/v1/a*': '*' must be a whole segment (/v1/items/*) or '**' the last one",
                 id="star inside a segment"),
    pytest.param("/v1/../x", "'/v1/../x': '.' and '..' segments are not allowed", id="dot-dot"),
    pytest.param("/v1/./x", "'/v1/./x': '.' and '..' segments are not allowed", id="dot"),
])
def test_parse_path_pattern_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_path_pattern(text)
    assert str(info.value) == message
