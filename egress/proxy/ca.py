"""egress's certificate authority: the CA intercepted hosts are signed with.

It lives in DATA_DIR/ca (created on first use, by mitmproxy's CertStore, which the proxy's
TlsConfig reads from the same directory). Skills trust it for intercepted hosts only; `egress
ca` prints its path, `egress ca --bundle` a bundle with the system CAs.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CA_BASENAME", "ca_dir", "ensure_bundle", "ensure_ca", "ensure_ca_apart"]

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


def ensure_ca_apart(base: Path) -> Path:
    """ensure_ca, in a child process when the CA does not exist yet: creating it loads
    cryptography and mitmproxy's certificate store (~20 MB), which `egress serve` keeps out of
    its own memory until mitmproxy is needed (egress/proxy/engine.py)."""
    cert = ca_dir(base) / f"{CA_BASENAME}-ca-cert.pem"
    if (ca_dir(base) / f"{CA_BASENAME}-ca.pem").is_file() and cert.is_file():
        return cert
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "egress.proxy.ca", str(base)], check=True,
                   timeout=120, stdout=subprocess.DEVNULL)
    return cert


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


if __name__ == "__main__":  # `python -m egress.proxy.ca DATA_DIR`: ensure_ca_apart's child
    import sys

    print(ensure_ca(Path(sys.argv[1])))
