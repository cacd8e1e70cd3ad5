"""`egress ca`: print the path of the CA certificate skills trust for intercepted hosts."""

from __future__ import annotations

import argparse
from typing import Any

from egress.cli.common import add_data_dir, data_dir


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
    from egress.proxy.ca import ensure_bundle, ensure_ca

    base = data_dir(args)
    print(ensure_bundle(base) if args.bundle else ensure_ca(base))
    return 0
