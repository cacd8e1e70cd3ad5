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


def register(sub: Any) -> None:
    p = sub.add_parser("ca", help="print the path of egress's CA certificate",
                       description="Print the CA certificate path (created on first use). Skills "
                                   "trust it for hosts egress intercepts: set SSL_CERT_FILE, "
                                   "REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS or CURL_CA_BUNDLE.")
    add_data_dir(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print(ensure_ca(data_dir(args)))
    return 0
