"""Child process of tests/parts/s3.py: moto's server over TLS, with S3's request checks.

    python _s3_server.py HOST PORT CERT KEY LOG

moto's server (``moto.server``'s own application) served by werkzeug with our certificate,
behind a WSGI layer that adds what real S3 checks and moto does not (moto trusts the
``x-amz-content-sha256`` header as the payload hash; S3 hashes the body and compares).
For SigV4 header-signed S3 requests (credential scope service ``s3``):

- no ``x-amz-content-sha256``                                 -> 400 InvalidRequest
- ``x-amz-content-sha256`` a hex digest that is not the body's -> 400 XAmzContentSHA256Mismatch
- ``x-amz-content-sha256`` none of hex / UNSIGNED-PAYLOAD / STREAMING-* -> 400 InvalidArgument
- ``host`` not among SignedHeaders                            -> 403 AccessDenied
- an ``x-amz-*`` header present but not signed                -> 403 AccessDenied
  (HeadersNotSigned)
- ``X-Amz-Date`` more than 15 minutes from the server clock   -> 403 RequestTimeTooSkewed

Once set-up has switched authentication on, a request without any signature and every
request to moto's own control API (``/moto-api/...``, which could switch it off) is
403 AccessDenied: like S3, the server then has no unauthenticated door.

moto then recomputes the signature itself (botocore's S3SigV4Auth over the request it
received, with the secret of the access key it holds) and answers SignatureDoesNotMatch,
InvalidAccessKeyId, InvalidToken or AccessDenied as S3 does. Each request is appended to
LOG as one JSON line (method, host, path, query, headers, body digest, status).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any
from xml.sax.saxutils import escape

SKEW = dt.timedelta(minutes=15)
HEX64 = re.compile(r"^[0-9a-f]{64}$")
MAX_BODY = 64 * 2**20

StartResponse = Callable[..., Any]


def _error(start: StartResponse, status: str, code: str, message: str,
           **extra: str) -> list[bytes]:
    fields = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in extra.items())
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{escape(message)}</Message>{fields}"
            f"<RequestId>egress-test</RequestId></Error>").encode()
    start(status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
    return [body]


def _signed_headers(authorization: str) -> set[str]:
    match = re.search(r"SignedHeaders=([^,\s]+)", authorization)
    return set(match.group(1).lower().split(";")) if match else set()


def _check(environ: dict[str, Any], body: bytes, start: StartResponse,
           auth_on: bool) -> list[bytes] | None:
    """S3's checks moto leaves out; None when the request may go on to moto."""
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    if auth_on and environ.get("PATH_INFO", "").startswith("/moto-api"):
        # moto's control API could switch authentication off again; S3 has no such door.
        return _error(start, "403 Forbidden", "AccessDenied", "Access Denied")
    if auth_on and not authorization and "X-Amz-Signature" not in environ.get(
            "QUERY_STRING", ""):
        return _error(start, "403 Forbidden", "AccessDenied", "Access Denied")
    scope = re.search(r"Credential=[^/,\s]+/\d{8}/[^/]+/([^/]+)/aws4_request", authorization)
    if not authorization.startswith("AWS4-HMAC-SHA256") or not scope or scope[1] != "s3":
        return None  # S3's rules for S3 requests only (set-up talks IAM and STS too)
    headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
               if k.startswith("HTTP_")}
    signed = _signed_headers(authorization)
    if "host" not in signed:
        return _error(start, "403 Forbidden", "AccessDenied",
                      "Host must be among the signed headers")
    unsigned = sorted(h for h in headers if h.startswith("x-amz-") and h not in signed)
    if unsigned:
        return _error(start, "403 Forbidden", "AccessDenied",
                      "There were headers present in the request which were not signed",
                      HeadersNotSigned=", ".join(unsigned))
    claimed = headers.get("x-amz-content-sha256")
    if claimed is None:
        return _error(start, "400 Bad Request", "InvalidRequest",
                      "Missing required header for this request: x-amz-content-sha256")
    if HEX64.match(claimed):
        actual = hashlib.sha256(body).hexdigest()
        if actual != claimed:
            return _error(start, "400 Bad Request", "XAmzContentSHA256Mismatch",
                          "The provided 'x-amz-content-sha256' header does not match what "
                          "was computed.", ClientComputedContentSHA256=claimed,
                          S3ComputedContentSHA256=actual)
    elif claimed != "UNSIGNED-PAYLOAD" and not claimed.startswith("STREAMING-"):
        return _error(start, "400 Bad Request", "InvalidArgument",
                      "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-..., or a "
                      "valid sha256 value.")
    stamp = headers.get("x-amz-date", "")
    try:
        when = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return _error(start, "403 Forbidden", "AccessDenied",
                      "AWS authentication requires a valid Date or x-amz-date header")
    now = dt.datetime.now(dt.UTC)
    if abs(now - when) > SKEW:
        return _error(start, "403 Forbidden", "RequestTimeTooSkewed",
                      "The difference between the request time and the current time is too "
                      "large.", RequestTime=stamp, ServerTime=now.strftime("%Y%m%dT%H%M%SZ"))
    return None


class S3Checks:
    """WSGI layer in front of moto: S3's checks and a request log."""

    def __init__(self, app: Callable[..., Iterable[bytes]], log_path: str) -> None:
        self.app = app
        self.log_path = log_path
        self.lock = threading.Lock()
        self.auth_on = False  # set once set-up switched moto's authentication on

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Any:
        from werkzeug.wsgi import get_input_stream

        body = get_input_stream(environ, max_content_length=MAX_BODY).read()
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        seen: dict[str, str] = {}

        def recording_start(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            seen["status"] = status
            return start_response(status, headers, *exc)

        refused = _check(environ, body, recording_start, self.auth_on)
        result = refused if refused is not None else self.app(environ, recording_start)
        if (refused is None and environ.get("PATH_INFO") == "/moto-api/reset-auth"
                and body.strip() == b"0"):
            self.auth_on = True
        try:
            return list(result)
        finally:
            if hasattr(result, "close"):
                result.close()
            self._log(environ, body, seen.get("status", "?"))

    def _log(self, environ: dict[str, Any], body: bytes, status: str) -> None:
        entry = {
            "method": environ.get("REQUEST_METHOD"),
            "host": environ.get("HTTP_HOST"),
            "path": environ.get("PATH_INFO"),
            "query": environ.get("QUERY_STRING", ""),
            "headers": {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
                        if k.startswith("HTTP_")},
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "body_length": len(body),
            "status": int(status.split()[0]) if status[:3].isdigit() else 0,
        }
        with self.lock, open(self.log_path, "a") as log:
            log.write(json.dumps(entry) + "\n")


def main() -> None:
    host, port, cert, key, log_path = sys.argv[1:6]
    import ssl

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from moto.server import MotoRequestHandler  # type: ignore[attr-defined]
    from werkzeug.serving import run_simple

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    app = S3Checks(DomainDispatcherApplication(create_backend_app), log_path)
    run_simple(host, int(port), app, threaded=True, ssl_context=context,
               request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
