"""AWS Signature Version 4, for requests a skill signed with placeholder keys (pure).

The skill's SDK signs every request with the placeholder access key it holds; egress strips
that signature and signs the request again with the real keys, following AWS's "Create a
signed AWS API request" (header authorization, HMAC-SHA256):

    canonical request   METHOD \\n URI \\n QUERY \\n HEADERS \\n SIGNED-HEADERS \\n PAYLOAD-HASH
    string to sign      AWS4-HMAC-SHA256 \\n AMZ-DATE \\n DATE/REGION/SERVICE/aws4_request \\n
                        hex(sha256(canonical request))
    signing key         HMAC chain: "AWS4"+secret -> date -> region -> service -> aws4_request

What is signed: `host`, every `x-amz-*` header, `content-type` and `content-md5` when sent
(AWS requires host and the x-amz-* headers; the rest travel unsigned, as an SDK may add
headers egress does not forward verbatim). The URI is the path as sent for S3, and for other
services the path with dot and empty segments removed, URI-encoded once more (AWS's rule). The query
is forwarded in canonical encoding (RFC 3986 unreserved characters bare, everything else
%XX), so egress and the service read it the same way; presigned-URL parameters (X-Amz-
Signature, X-Amz-Credential, ...) are removed: egress signs with the Authorization header.

The payload hash is the skill's `x-amz-content-sha256` when it is a SHA-256 or
`UNSIGNED-PAYLOAD` (S3 checks the body against it). `STREAMING-*` values and `Content-Encoding:
aws-chunked` (boto3's default uploads since 1.36, which sign or checksum each chunk) are
refused: re-signing would mean re-framing the upload. A request without the header and with
a body (other services) is signed once egress has the body (`needs_body`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote

from egress.secrets import Secret

__all__ = ["EMPTY_SHA256", "AwsKeys", "SigningRequest", "payload_hash_problem", "sign"]

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED = "UNSIGNED-PAYLOAD"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SIGNED_EXTRA = ("content-type", "content-md5")
# Presigned-URL parameters (SigV4, and S3's SigV2 ones): egress signs with the Authorization
# header instead; left in, they would be a second, placeholder signature.
_PRESIGN = frozenset({"x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-expires",
                      "x-amz-signedheaders", "x-amz-signature", "x-amz-security-token"})
_PRESIGN_V2 = frozenset({"AWSAccessKeyId", "Signature", "Expires"})
# The skill's signature and the headers egress sets itself.
_REPLACED = frozenset({"authorization", "x-amz-date", "x-amz-security-token"})


@dataclass(frozen=True)
class AwsKeys:
    access_key_id: Secret
    secret_access_key: Secret
    session_token: Secret | None = None


@dataclass(frozen=True)
class SigningRequest:
    method: str
    target: str  # path and query as the skill sent them (origin-form)
    fields: Sequence[tuple[str, str]]  # headers as they will be forwarded (host included)
    host: str  # the Host / :authority value the service will see


def payload_hash_problem(fields: Sequence[tuple[str, str]]) -> str | None:
    """Why the payload of a request with these headers cannot be re-signed, or None."""
    for name, value in fields:
        lower = name.lower()
        if lower == "x-amz-content-sha256":
            v = value.strip()
            if v.startswith("STREAMING-"):
                return (f"aws-chunked streaming upload (x-amz-content-sha256: {v[:48]}) cannot "
                        "be re-signed; configure the SDK for UNSIGNED-PAYLOAD or signed "
                        "payloads (boto3: request_checksum_calculation='when_required')")
            if v != UNSIGNED and not _HEX64.fullmatch(v):
                return "x-amz-content-sha256 is neither UNSIGNED-PAYLOAD nor a SHA-256 digest"
        if lower == "content-encoding" and "aws-chunked" in value.lower():
            return ("aws-chunked streaming upload (Content-Encoding: aws-chunked) cannot be "
                    "re-signed; configure the SDK for UNSIGNED-PAYLOAD or signed payloads")
    return None


def declared_payload_hash(fields: Sequence[tuple[str, str]]) -> str | None:
    """The skill's `x-amz-content-sha256` (checked by payload_hash_problem), or None."""
    for name, value in fields:
        if name.lower() == "x-amz-content-sha256":
            return value.strip()
    return None


def sign(req: SigningRequest, keys: AwsKeys, *, region: str, service: str, payload_hash: str,
         now: dt.datetime) -> tuple[list[tuple[str, str]], str]:
    """The headers and target to forward: the skill's signature replaced by egress's."""
    amz_date = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    path, _, query = req.target.partition("?")
    query = _canonical_query(query)
    fields = [(k, v) for k, v in req.fields if k.lower() not in _REPLACED]
    fields.append(("X-Amz-Date", amz_date))
    if keys.session_token is not None:
        fields.append(("X-Amz-Security-Token", keys.session_token.reveal()))
    if service == "s3" and declared_payload_hash(fields) is None:
        fields.append(("X-Amz-Content-SHA256", payload_hash))  # S3 requires it
    signed = _signed_headers(fields, req.host)
    names = ";".join(name for name, _ in signed)
    canonical = "\n".join([
        req.method, _canonical_uri(path, service), query,
        "".join(f"{name}:{value}\n" for name, value in signed), names, payload_hash])
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(("AWS4" + keys.secret_access_key.reveal()).encode(), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    fields.append(("Authorization", f"{ALGORITHM} Credential={keys.access_key_id.reveal()}/"
                                    f"{scope}, SignedHeaders={names}, Signature={signature}"))
    return fields, path + ("?" + query if query else "")


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _signed_headers(fields: Sequence[tuple[str, str]], host: str) -> list[tuple[str, str]]:
    values: dict[str, list[str]] = {"host": [host]}
    for name, value in fields:
        lower = name.lower()
        if lower == "host":
            continue  # `host` is the value the service sees, given separately
        if lower.startswith("x-amz-") or lower in _SIGNED_EXTRA:
            values.setdefault(lower, []).append(" ".join(value.split()))
    return [(name, ",".join(values[name])) for name in sorted(values)]


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def _canonical_query(query: str) -> str:
    """The query in AWS's canonical form, presigned-URL parameters removed: each name and
    value decoded once and URI-encoded (unreserved bare), sorted by name then value."""
    pairs = []
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        name, value = unquote(name), unquote(value)
        if name.lower() in _PRESIGN or name in _PRESIGN_V2:
            continue
        pairs.append((_encode(name), _encode(value)))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def _canonical_uri(path: str, service: str) -> str:
    if not path:
        return "/"
    if service == "s3":
        return path  # S3: the path as sent, encoded once (by the client)
    return quote(_remove_dot_segments(path), safe="/~")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986's dot-segment removal plus AWS's rule that empty segments ('//') go too, as
    AWS's SigV4 test suite (get-slashes: '//example//' signs as '/example/') and botocore do."""
    out: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if out:
                out.pop()
        elif segment not in (".", ""):
            out.append(segment)
    normal = "/" + "/".join(out)
    if path.endswith("/") and out:
        normal += "/"
    return normal
