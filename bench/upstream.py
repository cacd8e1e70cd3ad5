"""The one upstream every contender talks to: nginx on 127.0.0.3, TLS and plain HTTP.

A throwaway test CA (trustme) signs nginx's certificate; clients and intercepting proxies are
told to trust it. Files served (sparse, so they cost no disk):
  /small      1 KiB          the request-rate workloads
  /100m       100 MiB        the large transfer
  /1g         1 GiB          the memory-during-streaming check
  /echo-auth  the Authorization header nginx received (proves a credential was injected)
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

from bench.procs import Service, Supervisor, free_port

__all__ = ["UPSTREAM_IP", "Upstream", "start_nginx", "write_test_ca"]

UPSTREAM_IP = "127.0.0.3"
SMALL_BYTES = 1024
FILES = {"small": SMALL_BYTES, "100m": 100 * 1024 * 1024, "1g": 1024 * 1024 * 1024}


@dataclass(frozen=True)
class TestCA:
    ca_pem: Path  # the CA clients trust for the upstream
    cert_pem: Path  # nginx's chain
    key_pem: Path
    leaf_der: bytes  # nginx's certificate, to tell passthrough from interception


@dataclass
class Upstream:
    host: str
    https_port: int
    http_port: int
    ca: TestCA
    service: Service

    def url(self, path: str, *, tls: bool = True) -> str:
        if tls:
            return f"https://{self.host}:{self.https_port}{path}"
        return f"http://{self.host}:{self.http_port}{path}"


def write_test_ca(directory: Path) -> TestCA:
    ca = trustme.CA(organization_name="egress bench test CA")
    leaf = ca.issue_cert(UPSTREAM_IP, "bench.test")
    paths = TestCA(directory / "upstream-ca.pem", directory / "upstream-cert.pem",
                   directory / "upstream-key.pem", b"")
    ca.cert_pem.write_to_path(str(paths.ca_pem))
    leaf.private_key_pem.write_to_path(str(paths.key_pem))
    paths.cert_pem.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    return TestCA(paths.ca_pem, paths.cert_pem, paths.key_pem, der)


def _nginx_conf(root: Path, ca: TestCA, https_port: int, http_port: int) -> str:
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
{user}
worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 32768; }}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    client_body_temp_path {root}/tmp-body;
    proxy_temp_path {root}/tmp-proxy;
    fastcgi_temp_path {root}/tmp-fastcgi;
    uwsgi_temp_path {root}/tmp-uwsgi;
    scgi_temp_path {root}/tmp-scgi;
    server {{
        listen {UPSTREAM_IP}:{https_port} ssl;
        listen {UPSTREAM_IP}:{http_port};
        server_name _;
        ssl_certificate {ca.cert_pem};
        ssl_certificate_key {ca.key_pem};
        ssl_protocols TLSv1.2 TLSv1.3;
        root {root}/www;
        location = /echo-auth {{ default_type text/plain; return 200 "$http_authorization"; }}
    }}
}}
"""


def start_nginx(sup: Supervisor, work: Path, ca: TestCA) -> Upstream:
    root = work / "nginx"
    www = root / "www"
    www.mkdir(parents=True, exist_ok=True)
    for name, size in FILES.items():
        path = www / name
        if name == "small":
            path.write_bytes(b"x" * size)
        else:
            with open(path, "wb") as fh:
                fh.truncate(size)  # sparse: reads as zeros, takes no disk
    https_port, http_port = free_port(UPSTREAM_IP), free_port(UPSTREAM_IP)
    conf = root / "nginx.conf"
    conf.write_text(_nginx_conf(root, ca, https_port, http_port))
    service = sup.start("nginx", ["nginx", "-c", str(conf), "-p", str(root)],
                        ready=(UPSTREAM_IP, https_port))
    return Upstream(UPSTREAM_IP, https_port, http_port, ca, service)
