"""Self-test of tests/parts/s3.py: moto really verifies SigV4 for S3, as S3 does.

Right keys work (path style and virtual-hosted, user keys and role-session keys, unsigned
and signed payloads); everything a key-less or tampering client could try is refused with
S3's error code. Requests that need exact bytes are built by hand (botocore's signer, then
changed) and sent with httpx to the server's address.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.conftest import TestCA
from tests.parts.s3 import AwsKeys, S3Server, s3_server
from tests.parts.tunnel import Tunnel, connect_tunnel


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("s3"), test_ca) as server:
        yield server


@pytest.fixture(scope="module")
def tunnel(s3: S3Server) -> Iterator[Tunnel]:
    with connect_tunnel({s3.domain: s3.host, f"*.{s3.domain}": s3.host}) as proxy:
        yield proxy


def code_of(err: pytest.ExceptionInfo[ClientError]) -> str:
    return str(err.value.response["Error"]["Code"])


def signed(s3: S3Server, method: str, key: str, body: bytes = b"", *,
           payload: str = "sha256", keys: AwsKeys | None = None,
           when: dt.datetime | None = None, extra: dict[str, str] | None = None) -> AWSRequest:
    """A request to the server's address, signed by botocore like any SDK would sign it."""
    keys = keys or s3.keys
    assert keys is not None
    request = AWSRequest(method, f"{s3.direct_endpoint}/{s3.bucket}/{key}", data=body,
                         headers=extra or {})
    # botocore hashes the body unless the client's config turns payload signing off
    request.context["client_config"] = Config(
        s3={"payload_signing_enabled": payload != "UNSIGNED-PAYLOAD"})
    if when is not None:
        request.context["timestamp"] = when.strftime("%Y%m%dT%H%M%SZ")
    auth = S3SigV4Auth(Credentials(keys.access_key_id, keys.secret_access_key,
                                   keys.session_token), "s3", s3.region)
    if when is None:
        auth.add_auth(request)
    else:  # botocore stamps "now"; sign the given time instead
        auth._modify_request_before_signing(request)  # noqa: SLF001
        request.headers["X-Amz-Date"] = request.context["timestamp"]
        canonical = auth.canonical_request(request)
        signature = auth.signature(auth.string_to_sign(request, canonical), request)
        auth._inject_signature_to_request(request, signature)  # noqa: SLF001
    return request


def send(s3: S3Server, request: AWSRequest, *, url: str | None = None,
         body: bytes | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    changed = {k.lower(): v for k, v in (headers or {}).items()}
    sent_headers = {k: v for k, v in request.headers.items() if k.lower() not in changed}
    sent_headers.update(changed)
    with httpx.Client(verify=trust(s3), trust_env=False, timeout=10) as client:
        return client.request(request.method, url or request.url, headers=sent_headers,
                              content=request.body if body is None else body)


def trust(s3: S3Server) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=s3.ca_path)


def error_code(response: httpx.Response) -> str:
    text = response.text
    return text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in text else text


# -- right keys ----------------------------------------------------------------------------


@pytest.mark.parametrize("addressing", ["path", "virtual"])
def test_put_and_get_with_the_users_keys(s3: S3Server, tunnel: Tunnel, addressing: str) -> None:
    client = s3.client(proxy=tunnel.url, addressing=addressing)
    client.put_object(Bucket=s3.bucket, Key=f"{addressing}.txt", Body=b"hello " + b"x" * 100)
    got = client.get_object(Bucket=s3.bucket, Key=f"{addressing}.txt")["Body"].read()
    assert got == b"hello " + b"x" * 100
    last = s3.requests()[-1]
    wanted_host = s3.domain if addressing == "path" else f"{s3.bucket}.{s3.domain}"
    assert last["host"] == f"{wanted_host}:{s3.port}"
    assert last["headers"]["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={s3.keys.access_key_id}/")  # type: ignore[union-attr]


def test_role_session_keys_work_with_their_token(s3: S3Server, tunnel: Tunnel) -> None:
    client = s3.client(s3.session_keys, proxy=tunnel.url)
    client.put_object(Bucket=s3.bucket, Key="session.txt", Body=b"from a role")
    assert client.get_object(Bucket=s3.bucket, Key="session.txt")["Body"].read() == b"from a role"
    assert "x-amz-security-token" in s3.requests()[-1]["headers"]


@pytest.mark.parametrize("payload_signing", [False, True], ids=["UNSIGNED-PAYLOAD", "sha256"])
def test_single_shot_payloads(s3: S3Server, tunnel: Tunnel, payload_signing: bool) -> None:
    # Without "when_required", boto3 >= 1.36 streams uploads as aws-chunked with a checksum
    # trailer (STREAMING-UNSIGNED-PAYLOAD-TRAILER); this is how a client gets the classic
    # UNSIGNED-PAYLOAD or a signed SHA-256 payload.
    client = s3.client(proxy=tunnel.url, request_checksum_calculation="when_required",
                       s3={"payload_signing_enabled": payload_signing})
    client.put_object(Bucket=s3.bucket, Key="single.txt", Body=b"one shot")
    claimed = s3.requests()[-1]["headers"]["x-amz-content-sha256"]
    assert claimed == (hashlib.sha256(b"one shot").hexdigest() if payload_signing
                       else "UNSIGNED-PAYLOAD")
    assert client.get_object(Bucket=s3.bucket, Key="single.txt")["Body"].read() == b"one shot"


def test_default_boto3_upload_is_aws_chunked(s3: S3Server, tunnel: Tunnel) -> None:
    s3.client(proxy=tunnel.url).put_object(Bucket=s3.bucket, Key="chunked.txt", Body=b"abc")
    sent = s3.requests()[-1]["headers"]
    assert sent["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert "aws-chunked" in sent["content-encoding"]


# -- wrong keys ----------------------------------------------------------------------------


def test_wrong_secret_is_signature_does_not_match(s3: S3Server, tunnel: Tunnel) -> None:
    assert s3.keys is not None
    client = s3.client(AwsKeys(s3.keys.access_key_id, "not-the-secret"), proxy=tunnel.url)
    with pytest.raises(ClientError) as err:
        client.get_object(Bucket=s3.bucket, Key="path.txt")
    assert code_of(err) == "SignatureDoesNotMatch"


def test_unknown_key_id_is_invalid_access_key_id(s3: S3Server, tunnel: Tunnel) -> None:
    client = s3.client(AwsKeys("AKIAPLACEHOLDER00000", "placeholder"), proxy=tunnel.url)
    with pytest.raises(ClientError) as err:
        client.list_objects_v2(Bucket=s3.bucket)
    assert code_of(err) == "InvalidAccessKeyId"


@pytest.mark.parametrize("token", [None, "bogus-token"], ids=["missing", "wrong"])
def test_role_keys_without_their_token_are_refused(s3: S3Server, tunnel: Tunnel,
                                                   token: str | None) -> None:
    assert s3.session_keys is not None
    keys = AwsKeys(s3.session_keys.access_key_id, s3.session_keys.secret_access_key, token)
    with pytest.raises(ClientError) as err:
        s3.client(keys, proxy=tunnel.url).get_object(Bucket=s3.bucket, Key="session.txt")
    assert code_of(err) in {"InvalidToken", "InvalidAccessKeyId"}


def test_user_key_with_a_session_token_is_invalid_token(s3: S3Server, tunnel: Tunnel) -> None:
    assert s3.keys is not None
    keys = AwsKeys(s3.keys.access_key_id, s3.keys.secret_access_key, "not-a-session")
    with pytest.raises(ClientError) as err:
        s3.client(keys, proxy=tunnel.url).get_object(Bucket=s3.bucket, Key="path.txt")
    assert code_of(err) == "InvalidToken"


@pytest.mark.parametrize("path", ["{bucket}/path.txt", "moto-api/reset-auth"])
def test_anonymous_request_is_refused(s3: S3Server, path: str) -> None:
    with httpx.Client(verify=trust(s3), trust_env=False) as client:
        response = client.post(f"{s3.direct_endpoint}/{path.format(bucket=s3.bucket)}",
                               content=b"inf")
    assert response.status_code == 403
    assert error_code(response) == "AccessDenied"


# -- tampering after signing ----------------------------------------------------------------


def test_hand_signed_request_is_accepted(s3: S3Server) -> None:
    response = send(s3, signed(s3, "PUT", "hand.txt", b"by hand"))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("change", [
    pytest.param({"url_suffix": "-other"}, id="path"),
    pytest.param({"url_suffix": "?x-id=GetObject"}, id="query added"),
    pytest.param({"headers": {"Content-Type": "text/evil"}}, id="signed header changed"),
    pytest.param({"headers": {"Host": "other.s3.aws.test"}}, id="host"),
    pytest.param({"method": "DELETE"}, id="method"),
])
def test_tampered_signed_parts_are_signature_does_not_match(s3: S3Server,
                                                            change: dict[str, Any]) -> None:
    request = signed(s3, "PUT", "tamper.txt", b"body",
                     extra={"Content-Type": "text/plain"})
    if "method" in change:
        request.method = change["method"]
    url = request.url + change.get("url_suffix", "")
    response = send(s3, request, url=url, headers=change.get("headers"))
    assert response.status_code == 403, response.text
    assert error_code(response) == "SignatureDoesNotMatch"


def test_body_swapped_under_a_signed_payload_hash_is_refused(s3: S3Server) -> None:
    request = signed(s3, "PUT", "swap.txt", b"original")
    response = send(s3, request, body=b"tampered")
    assert response.status_code == 400
    assert error_code(response) == "XAmzContentSHA256Mismatch"


def test_body_and_hash_swapped_is_signature_does_not_match(s3: S3Server) -> None:
    request = signed(s3, "PUT", "swap2.txt", b"original")
    response = send(s3, request, body=b"tampered",
                    headers={"x-amz-content-sha256": hashlib.sha256(b"tampered").hexdigest()})
    assert response.status_code == 403
    assert error_code(response) == "SignatureDoesNotMatch"


def test_unsigned_payload_body_may_change_as_on_s3(s3: S3Server) -> None:
    # UNSIGNED-PAYLOAD means exactly that on S3: the signature does not cover the body.
    request = signed(s3, "PUT", "unsigned.txt", b"original", payload="UNSIGNED-PAYLOAD")
    assert send(s3, request, body=b"replaced").status_code == 200


def test_unsigned_amz_header_is_refused(s3: S3Server) -> None:
    request = signed(s3, "PUT", "meta.txt", b"body")
    response = send(s3, request, headers={"x-amz-meta-smuggled": "yes"})
    assert response.status_code == 403
    assert "x-amz-meta-smuggled" in response.text


def test_missing_content_sha256_is_refused(s3: S3Server) -> None:
    request = signed(s3, "GET", "path.txt")
    headers = {k: v for k, v in request.headers.items() if k.lower() != "x-amz-content-sha256"}
    with httpx.Client(verify=trust(s3), trust_env=False) as client:
        response = client.get(request.url, headers=headers)
    assert response.status_code == 400
    assert error_code(response) == "InvalidRequest"


def test_old_signature_is_request_time_too_skewed(s3: S3Server) -> None:
    when = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)
    response = send(s3, signed(s3, "GET", "hand.txt", when=when))
    assert response.status_code == 403
    assert error_code(response) == "RequestTimeTooSkewed"


def test_requests_log_keeps_what_arrived(s3: S3Server) -> None:
    send(s3, signed(s3, "PUT", "logged.txt", b"12345"))
    last = s3.requests()[-1]
    assert (last["method"], last["path"], last["status"]) == (
        "PUT", f"/{s3.bucket}/logged.txt", 200)
    assert last["body_sha256"] == hashlib.sha256(b"12345").hexdigest()
