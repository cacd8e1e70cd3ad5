"""`egress ca`: print the path of the CA certificate skills trust for intercepted hosts."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from egress.cli.common import add_data_dir, data_dir

CA_BASENAME = "mitmproxy"  # mitmproxy's TlsConfig looks for this name in its confdir


def ca_dir(base: Path) -> Path:
    return base / "ca"


def ensure_ca(base: Path) -> Path:
    """Create egress's CA in DATA_DIR/ca on first use; return the certificate's path."""
    from mitmproxy import certs

    directory = ca_dir(base)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    certs.CertStore.from_store(directory, CA_BASENAME, 2048)
    return directory / f"{CA_BASENAME}-ca-cert.pem"


def ensure_bundle(base: Path) -> Path:
    """System CAs + egress's CA in one PEM file, for clients that take a single trust file.

    SSL_CERT_FILE and friends *replace* a client's trust store: pointing them at egress's CA
    alone would break every passthrough host. The bundle keeps both.
    """
    import ssl

    ca = ensure_ca(base)
    paths = ssl.get_default_verify_paths()
    system = Path(paths.cafile or paths.openssl_cafile or "/etc/ssl/certs/ca-certificates.crt")
    parts = [system.read_text()] if system.is_file() else []
    parts.append(ca.read_text())
    bundle = ca_dir(base) / "bundle.pem"
    tmp = bundle.with_suffix(".tmp")
    tmp.write_text("\n".join(p.rstrip("\n") for p in parts) + "\n")
    tmp.replace(bundle)
    return bundle


def register(sub: Any) -> None:
    p = sub.add_parser("ca", help="print the path of egress's CA certificate",
                       description="Print the CA certificate path (created on first use). Skills "
                                   "trust it for hosts egress intercepts: set SSL_CERT_FILE, "
                                   "REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS or CURL_CA_BUNDLE.")
    p.add_argument("--bundle", action="store_true",
                   help="print a bundle of the system CAs plus egress's CA instead (for "
                        "SSL_CERT_FILE-style variables, which replace the system store)")
    add_data_dir(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    base = data_dir(args)
    print(ensure_bundle(base) if args.bundle else ensure_ca(base))
    return 0
