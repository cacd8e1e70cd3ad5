"""egress's SigV4 re-signing (egress/credentials/sigv4.py) against two independent references.

1. AWS's published examples (the SigV4 test suite's `get-vanilla` and the IAM ListUsers example
   of "Create a signed AWS API request"): egress's signature must be the one AWS printed.
2. botocore, AWS's own signer: for each request a skill might send (odd query encodings,
   repeated parameters, dot segments, session tokens, presigned-URL leftovers, folded header
   values, S3 payload hashes), botocore signs the request *as egress forwards it*; the two
   Authorization headers must be identical, so the service, which verifies what it receives,
   accepts egress's signature. End to end against a verifying S3 server:
   tests/e2e/test_aws_sigv4.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from types import SimpleNamespace

import pytest
from botocore import auth as botocore_auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from egress.credentials.sigv4 import AwsKeys, SigningRequest, payload_hash_problem, sign
from egress.secrets import Secret

# The example keys AWS's documentation and test suite use.
KEY_ID = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
NOW = dt.datetime(2015, 8, 30, 12, 36, tzinfo=dt.UTC)
# What a skill's SDK signed with: the placeholder keys, an old date. egress replaces all of it.
PLACEHOLDER_AUTH = ("AWS4-HMAC-SHA256 Credential=AKIAPLACEHOLDER0000/20990101/us-east-1/s3/"
                    "aws4_request, SignedHeaders=host;x-amz-date, Signature=" + "0" * 64)


def keys(session_token: str | None = None) -> AwsKeys:
    return AwsKeys(Secret(KEY_ID), Secret(SECRET_KEY),
                   Secret(session_token) if session_token else None)


def authorization(fields: Sequence[tuple[str, str]]) -> str:
    found = [v for k, v in fields if k.lower() == "authorization"]
    assert len(found) == 1, fields
    return found[0]


@pytest.mark.parametrize("method, target, fields, region, service, signature", [
    pytest.param("GET", "/", [("Host", "example.amazonaws.com")], "us-east-1", "service",
                 "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
                 id="aws test suite get-vanilla"),
    pytest.param("GET", "/?Action=ListUsers&Version=2010-05-08",
                 [("Host", "iam.amazonaws.com"),
                  ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")],
                 "us-east-1", "iam",
                 "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
                 id="aws docs IAM ListUsers"),
    pytest.param("GET", "//example//", [("Host", "example.amazonaws.com")], "us-east-1",
                 "service", "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84",
                 id="aws test suite get-slashes"),
    pytest.param("GET", "/./example", [("Host", "example.amazonaws.com")], "us-east-1",
                 "service", "ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5",
                 id="aws test suite get-slash-pointless-dot"),
])
def test_signature_is_the_one_aws_published(method: str, target: str,
                                            fields: list[tuple[str, str]], region: str,
                                            service: str, signature: str) -> None:
    host = fields[0][1]
    forwarded, _ = sign(SigningRequest(method, target, fields, host), keys(), region=region,
                        service=service, payload_hash=hashlib.sha256(b"").hexdigest(), now=NOW)
    assert authorization(forwarded).endswith(f", Signature={signature}")
    assert authorization(forwarded).startswith(
        f"AWS4-HMAC-SHA256 Credential={KEY_ID}/20150830/{region}/{service}/aws4_request, ")


SQS = "sqs.eu-west-1.amazonaws.com"
S3 = "bucket.s3.eu-west-1.amazonaws.com"
EMPTY = hashlib.sha256(b"").hexdigest()
BODY = b'{"QueueName": "jobs", "note": "caf\xc3\xa9"}'


@pytest.mark.parametrize("method, target, extra, body, service, token, forwarded_target", [
    pytest.param("GET", "/?b=2&a=1&a=0", [], b"", "sqs", None, "/?a=0&a=1&b=2",
                 id="query sorted by name then value"),
    pytest.param("GET", "/?q=a+b%20c&x=%7e&y=caf%C3%A9&z=%2F%3D", [], b"", "sqs", None,
                 "/?q=a%2Bb%20c&x=~&y=caf%C3%A9&z=%2F%3D",
                 id="query re-encoded canonically (plus literal, tilde bare, utf-8)"),
    pytest.param("GET", "/?flag&empty=", [], b"", "sqs", None, "/?empty=&flag=",
                 id="parameters without a value"),
    pytest.param("GET", "/?X-Amz-Signature=abc&X-Amz-Credential=AKIA%2Fx&AWSAccessKeyId=AKIA"
                 "&Signature=s&Expires=1&keep=1", [], b"", "sqs", None, "/?keep=1",
                 id="presigned-URL parameters (v4 and v2) removed"),
    pytest.param("GET", "/a/./b/../c//d", [], b"", "sqs", None, "/a/./b/../c//d",
                 id="non-S3 path: dot and empty segments removed for signing, forwarded as sent"),
    pytest.param("GET", "/path%20with%20space/%E2%82%AC", [], b"", "sqs", None,
                 "/path%20with%20space/%E2%82%AC", id="non-S3 path encoded twice for signing"),
    pytest.param("POST", "/", [("Content-Type", "application/x-amz-json-1.0"),
                               ("X-Amz-Target", "AmazonSQS.CreateQueue")], BODY, "sqs",
                 None, "/", id="JSON API, body hashed by egress"),
    pytest.param("POST", "/", [("X-Amz-Meta-Tags", "  a   b  "), ("x-amz-meta-tags", "c")],
                 b"", "sqs", "FQoGZXIvYXdzEXAMPLETOKEN", "/",
                 id="session token, repeated and padded x-amz headers folded"),
    pytest.param("PUT", "/key%20with%20space/caf%C3%A9.txt",
                 [("X-Amz-Content-SHA256", hashlib.sha256(BODY).hexdigest()),
                  ("Content-Type", "text/plain"), ("Content-MD5", "a/oFzf1n/JvWdTc0VRIzUw==")],
                 BODY, "s3", None, "/key%20with%20space/caf%C3%A9.txt",
                 id="S3 PUT with a signed payload, path signed as sent"),
    pytest.param("GET", "/a/../b", [("X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD")], b"", "s3",
                 None, "/a/../b", id="S3 unsigned payload, dot segments kept"),
])
def test_egress_signs_what_it_forwards_as_botocore_would(
        monkeypatch: pytest.MonkeyPatch, method: str, target: str,
        extra: list[tuple[str, str]], body: bytes, service: str, token: str | None,
        forwarded_target: str) -> None:
    host = S3 if service == "s3" else SQS
    skill_fields = [("Host", host), ("X-Amz-Date", "20990101T000000Z"),
                    ("Authorization", PLACEHOLDER_AUTH), *extra]
    if token:
        skill_fields.append(("X-Amz-Security-Token", "placeholder-session-token"))
    declared = [v for k, v in extra if k.lower() == "x-amz-content-sha256"]
    payload_hash = declared[0] if declared else hashlib.sha256(body).hexdigest()
    fields, forwarded = sign(SigningRequest(method, target, skill_fields, host), keys(token),
                             region="eu-west-1", service=service, payload_hash=payload_hash,
                             now=NOW)
    assert forwarded == forwarded_target
    names = [k.lower() for k, _ in fields]
    assert names.count("authorization") == names.count("x-amz-date") == 1
    assert "placeholder-session-token" not in str(fields) and PLACEHOLDER_AUTH not in str(fields)
    if token:
        assert ("X-Amz-Security-Token", token) in fields

    # botocore signs the request the service receives.
    monkeypatch.setattr(botocore_auth, "get_current_datetime", lambda: NOW.replace(tzinfo=None))
    reference = AWSRequest(method, f"https://{host}{forwarded}", data=body)
    if service == "s3":  # botocore's S3 signer: sign the payload unless told UNSIGNED-PAYLOAD
        reference.context["client_config"] = SimpleNamespace(
            s3={"payload_signing_enabled": declared != ["UNSIGNED-PAYLOAD"]})
    for name, value in fields:
        if name.lower() not in ("authorization", "host"):
            reference.headers[name] = value  # adds: repeated headers stay repeated
    signer = (botocore_auth.S3SigV4Auth if service == "s3" else botocore_auth.SigV4Auth)(
        Credentials(KEY_ID, SECRET_KEY, token), service, "eu-west-1")
    signer.add_auth(reference)
    assert authorization(fields) == reference.headers["Authorization"]


def test_signature_depends_on_every_signed_part() -> None:
    # Mutation guard for the table above: a change to any signed part changes the signature.
    base = dict(method="PUT", target="/k?a=1", host=S3,
                fields=[("Host", S3), ("Content-Type", "text/plain")])

    def signature(**change: object) -> str:
        parts = {**base, **change}
        fields, _ = sign(SigningRequest(str(parts["method"]), str(parts["target"]),
                                        parts["fields"], str(parts["host"])),  # type: ignore[arg-type]
                         keys(), region="eu-west-1", service="s3", payload_hash=EMPTY, now=NOW)
        return authorization(fields).rsplit("=", 1)[1]

    original = signature()
    for change in ({"method": "POST"}, {"target": "/k?a=2"}, {"target": "/K?a=1"},
                   {"host": "other.s3.eu-west-1.amazonaws.com"},
                   {"fields": [("Host", S3), ("Content-Type", "text/html")]}):
        assert signature(**change) != original, change
    unsigned = signature(fields=[("Host", S3), ("Content-Type", "text/plain"), ("Accept", "*/*")])
    assert unsigned == original  # headers outside the signed set travel unsigned


@pytest.mark.parametrize("fields, problem", [
    pytest.param([("X-Amz-Content-SHA256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")],
                 "aws-chunked streaming upload", id="streaming signature"),
    pytest.param([("Content-Encoding", "gzip, aws-chunked")], "aws-chunked streaming upload",
                 id="aws-chunked content encoding"),
    pytest.param([("X-Amz-Content-SHA256", "abc")], "neither UNSIGNED-PAYLOAD nor a SHA-256",
                 id="malformed payload hash"),
    pytest.param([("X-Amz-Content-SHA256", EMPTY.upper())], "neither UNSIGNED-PAYLOAD nor",
                 id="upper-case digest (AWS wants lower-case hex)"),
    pytest.param([("X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD")], None, id="unsigned payload"),
    pytest.param([("x-amz-content-sha256", EMPTY)], None, id="a SHA-256 digest"),
    pytest.param([("Content-Type", "text/plain")], None, id="no declared hash"),
])
def test_payloads_egress_cannot_re_sign_are_named(fields: list[tuple[str, str]],
                                                  problem: str | None) -> None:
    found = payload_hash_problem(fields)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
