"""Server certificates from the test CA, as files and as ``ssl.SSLContext``.

Every part that serves TLS gets one certificate naming the host names it answers for and
the loopback address it listens on (so both ``https://s3.aws.test:PORT`` through a proxy and
``https://127.0.0.2:PORT`` directly verify against the test CA).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = ["CertFiles", "server_context", "write_cert"]


@dataclass(frozen=True)
class CertFiles:
    cert: Path  # leaf certificate (PEM) followed by nothing else: the CA is the trust anchor
    key: Path  # its private key (PEM)


def write_cert(ca: trustme.CA, names: list[str], directory: Path, stem: str) -> CertFiles:
    """Issue a certificate for ``names`` (host names and/or IP addresses) into ``directory``."""
    if not names:
        raise ValueError("a certificate needs at least one name")
    directory.mkdir(parents=True, exist_ok=True)
    leaf = ca.issue_cert(*names)
    files = CertFiles(directory / f"{stem}.pem", directory / f"{stem}.key")
    leaf.cert_chain_pems[0].write_to_path(str(files.cert))
    leaf.private_key_pem.write_to_path(str(files.key))
    files.key.chmod(0o600)
    return files


def server_context(ca: trustme.CA, names: list[str],
                   alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
    """A TLS server context with one certificate for ``names``, TLS 1.2+, the given ALPN."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    ca.issue_cert(*names).configure_cert(context)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context
