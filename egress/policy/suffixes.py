"""Public suffixes: domains under which unrelated parties register names.

A wildcard over a public suffix (`*.co.uk`, `*.github.io`, `*.s3.amazonaws.com`) allows every
owner's names at once: a skill allowed `*.github.io` reaches any attacker's GitHub Pages site.
The loader refuses such wildcards (as it refuses `*.com`); `egress check` warns about a wildcard
whose base is not itself a suffix but has suffixes below it (`*.amazonaws.com` covers
`anyone.s3.amazonaws.com`).

The list is the Public Suffix List as shipped, offline, by the `publicsuffixlist` package (kept
current by its maintainer; upgrading the package updates the list). Both sections count: the
ICANN section (`co.uk`) and the private section, where companies register domains that hand
out names to their customers (`github.io`, `herokuapp.com`, `s3.amazonaws.com`) -- for an
allowlist the two are the same risk. Reading the list costs ~0.1 s and happens once, the first
time a wildcard is checked.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import idna
from publicsuffixlist import PSLFILE, PublicSuffixList

__all__ = ["SuffixInfo", "public_suffix", "suffixes_below"]


@dataclass(frozen=True)
class SuffixInfo:
    name: str  # the suffix, normalised (IDNA, lowercase)
    section: str  # "ICANN" or "private"


@functools.lru_cache(maxsize=1)
def _lists() -> tuple[PublicSuffixList, PublicSuffixList]:
    return PublicSuffixList(), PublicSuffixList(only_icann=True)


def public_suffix(host: str) -> SuffixInfo | None:
    """`host` (normalised) as a public suffix, or None when names under it share one owner.
    (`*.ck` in the list makes `anything.ck` a suffix; `!www.ck` makes `www.ck` none.)"""
    full, icann = _lists()
    if not full.is_public(host):
        return None
    return SuffixInfo(host, "ICANN" if icann.is_public(host) else "private")


def suffixes_below(host: str) -> tuple[str, ...]:
    """Public suffixes strictly under `host` (normalised), shortest first: what `*.host` also
    covers."""
    return _children().get(host, ())


@functools.lru_cache(maxsize=1)
def _entries() -> frozenset[str]:
    """Every suffix the list names; a wildcard rule `*.x` as `x` (a wildcard over `x` covers
    the suffixes under it); exceptions `!y` are not suffixes."""
    out: set[str] = set()
    with open(PSLFILE, encoding="utf-8") as fh:
        for line in fh:
            rule = line.split("//", 1)[0].strip()
            if not rule or rule.startswith("!"):
                continue
            name = _normalise(rule[2:] if rule.startswith("*.") else rule)
            if name is not None:
                out.add(name)
    return frozenset(out)


@functools.lru_cache(maxsize=1)
def _children() -> dict[str, tuple[str, ...]]:
    below: dict[str, set[str]] = {}
    for entry in _entries():
        labels = entry.split(".")
        for i in range(1, len(labels) - 1):  # proper ancestors with two or more labels
            below.setdefault(".".join(labels[i:]), set()).add(entry)
    return {k: tuple(sorted(v, key=lambda n: (n.count("."), n))) for k, v in below.items()}


def _normalise(name: str) -> str | None:
    try:
        return name.lower() if name.isascii() else idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError:
        return None
