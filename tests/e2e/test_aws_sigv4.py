"""End to end: boto3 with placeholder AWS keys, through egress, to an S3 that verifies SigV4.

The skill's boto3 signs with `AKIAEGRESSPLACEHOLDR` and a placeholder secret; egress strips
that signature and signs again with the real keys (from env: and file: references). The S3
server (moto, IAM authentication on: tests/parts/s3.py) rebuilds every signature from what
it received: a request that reaches it with anything but the real keys is refused with
InvalidAccessKeyId or SignatureDoesNotMatch, so a 200 proves egress signed it right. The
server's request log shows what arrived: never a placeholder.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.conftest import UPSTREAM_IP, TestCA, write_policy
from tests.dnsserver import DnsServer
from tests.parts.s3 import AwsKeys, S3Server, s3_server
from tests.proxy import Proxy, run_proxy
from tests.upstream import Upstream, run_upstream

ONE_PATH = ("what is checked happens inside intercepted traffic, mitmproxy's on both "
            "paths (tests/proxy.py); the fast path only hands it over")

PLACEHOLDER = AwsKeys("AKIAEGRESSPLACEHOLDR", "placeholder/secret/placeholder/secret0000")
SESSION_PH = AwsKeys("ASIAEGRESSPLACEHOLDR", "placeholder/session/secret/placeholder000",
                     "placeholder-session-token-0000000000000000")
UNSIGNED = {"request_checksum_calculation": "when_required",
            "s3": {"payload_signing_enabled": False}}
SIGNED = {"request_checksum_calculation": "when_required", "s3": {"payload_signing_enabled": True}}


@dataclass
class AwsWorld:
    proxy: Proxy
    s3: S3Server
    other: Upstream
    bundle: str

    def client(self, *, keys: AwsKeys = PLACEHOLDER, addressing: str = "path",
               **config: Any) -> Any:
        return self.s3.client(keys, proxy=self.proxy.url("storer"), addressing=addressing,
                              ca_path=self.bundle, **config)

    def received(self) -> list[dict[str, Any]]:
        return self.s3.requests()


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[AwsWorld]:
    tmp = tmp_path_factory.mktemp("aws")
    with s3_server(tmp / "s3", test_ca) as s3, DnsServer() as dns, \
            run_upstream(UPSTREAM_IP, ca=test_ca.ca, names=["other.aws.test"],
                         tmp=str(tmp)) as other:
        assert s3.keys is not None and s3.session_keys is not None
        for name in (s3.domain, f"{s3.bucket}.{s3.domain}", "other.aws.test"):
            dns.set(name, [s3.host], ttl=300)
        secret_file = tmp / "aws-secret"
        secret_file.write_text(s3.keys.secret_access_key + "\n")
        policies = tmp / "policies"
        policies.mkdir()
        (policies / "upstream-ca.pem").write_text(Path(test_ca.path).read_text())
        write_policy(policies, f"""
            settings:
              dns: {{nameservers: ["{dns.address}"], timeout: 2}}
              networks: {{allow: ["{s3.host}/32"]}}
              upstream_ca: upstream-ca.pem
            skills:
              storer:
                allow:
                  - host: {s3.domain}
                    ports: [{s3.port}]
                    credential: s3-user
                  - host: {s3.bucket}.{s3.domain}
                    ports: [{s3.port}]
                    credential: s3-session
                  - host: {s3.domain}
                    ports: [{s3.port}]
                    methods: [PUT, DELETE]
                    paths: ["/{s3.bucket}/approved/**"]
                    credential: s3-user
                    approval: {{wait: 0}}
                  - host: other.aws.test
                    ports: [{other.port}]
                    methods: [GET, PUT, POST]
                credentials:
                  s3-user:
                    secret: "file:{secret_file}"
                    aws_sigv4:
                      access_key_id: env:EGRESS_TEST_AWS_KEY_ID
                      region: {s3.region}
                      service: s3
                    placeholder: {PLACEHOLDER.access_key_id}
                  s3-session:
                    secret: env:EGRESS_TEST_AWS_SESSION_SECRET
                    aws_sigv4:
                      access_key_id: env:EGRESS_TEST_AWS_SESSION_KEY_ID
                      session_token: env:EGRESS_TEST_AWS_SESSION_TOKEN
                      region: {s3.region}
                      service: s3
                    placeholder: {SESSION_PH.access_key_id}
            """)
        env = {"EGRESS_TEST_AWS_KEY_ID": s3.keys.access_key_id,
               "EGRESS_TEST_AWS_SESSION_KEY_ID": s3.session_keys.access_key_id,
               "EGRESS_TEST_AWS_SESSION_SECRET": s3.session_keys.secret_access_key,
               "EGRESS_TEST_AWS_SESSION_TOKEN": s3.session_keys.session_token or ""}
        with run_proxy(policies, tmp / "data", ["storer"], env=env) as proxy:
            bundle = tmp / "bundle.pem"
            bundle.write_text((tmp / "data" / "ca" / "mitmproxy-ca-cert.pem").read_text()
                              + Path(test_ca.path).read_text())
            yield AwsWorld(proxy, s3, other, str(bundle))


def since(world: AwsWorld, before: int) -> list[dict[str, Any]]:
    return world.received()[before:]


def authorization(record: dict[str, Any]) -> str:
    return str(record["headers"].get("authorization", ""))


@pytest.mark.parametrize("config, payload", [
    pytest.param(UNSIGNED, "UNSIGNED-PAYLOAD", id="UNSIGNED-PAYLOAD"),
    pytest.param(SIGNED, "sha256", id="signed payload"),
])
def test_boto3_with_placeholder_keys_is_re_signed(aws: AwsWorld, config: dict[str, Any],
                                                  payload: str) -> None:
    body = os.urandom(2048)
    before = len(aws.received())
    s3 = aws.client(**config)
    s3.put_object(Bucket=aws.s3.bucket, Key=f"dir/{payload}.bin", Body=body)
    got = s3.get_object(Bucket=aws.s3.bucket, Key=f"dir/{payload}.bin")["Body"].read()
    assert got == body
    listed = s3.list_objects_v2(Bucket=aws.s3.bucket, Prefix="dir/", MaxKeys=10)
    assert f"dir/{payload}.bin" in [o["Key"] for o in listed["Contents"]]
    records = since(aws, before)
    assert [r["status"] for r in records] == [200, 200, 200]
    put = records[0]
    assert put["method"] == "PUT" and put["body_sha256"] == hashlib.sha256(body).hexdigest()
    expected = "UNSIGNED-PAYLOAD" if payload == "UNSIGNED-PAYLOAD" else put["body_sha256"]
    assert put["headers"]["x-amz-content-sha256"] == expected
    assert aws.s3.keys is not None
    for r in records:
        assert f"Credential={aws.s3.keys.access_key_id}/" in authorization(r)
        assert PLACEHOLDER.access_key_id not in str(r)


def test_session_credentials_on_a_virtual_hosted_bucket(aws: AwsWorld) -> None:
    before = len(aws.received())
    s3 = aws.client(keys=SESSION_PH, addressing="virtual", **UNSIGNED)
    s3.put_object(Bucket=aws.s3.bucket, Key="session.txt", Body=b"from a role session")
    assert s3.get_object(Bucket=aws.s3.bucket, Key="session.txt")["Body"].read() == \
        b"from a role session"
    records = since(aws, before)
    assert [r["status"] for r in records] == [200, 200]
    assert aws.s3.session_keys is not None
    for r in records:
        assert r["host"].startswith(f"{aws.s3.bucket}.")
        assert r["headers"]["x-amz-security-token"] == aws.s3.session_keys.session_token
        assert f"Credential={aws.s3.session_keys.access_key_id}/" in authorization(r)
        assert SESSION_PH.session_token not in str(r)


def test_one_credentials_placeholder_on_the_others_host_is_exfiltration(aws: AwsWorld) -> None:
    # The user key's placeholder signed for the session key's bucket host: refused, unsent.
    before = len(aws.received())
    s3 = aws.client(keys=PLACEHOLDER, addressing="virtual", **UNSIGNED)
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=aws.s3.bucket, Key="mixed.txt", Body=b"x")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert since(aws, before) == []
    denied = [r for r in aws.proxy.audit() if r["reason"] == "credential_exfiltration"]
    assert denied[-1]["detail"] == "carries credential s3-user bound to other hosts"


def test_default_aws_chunked_upload_is_refused_with_a_clear_reason(aws: AwsWorld) -> None:
    before = len(aws.received())
    s3 = aws.client()  # boto3's default: aws-chunked with a CRC trailer
    with pytest.raises(ClientError) as err:
        s3.put_object(Bucket=aws.s3.bucket, Key="chunked.bin", Body=b"x" * 1000)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert since(aws, before) == []  # nothing reached S3
    denied = [r for r in aws.proxy.audit() if r["reason"] == "signing_unsupported"]
    assert denied and denied[-1]["method"] == "PUT" and denied[-1]["skill"] == "storer"
    assert "aws-chunked" in denied[-1]["detail"]


def test_a_body_without_a_payload_hash_is_hashed_and_signed(aws: AwsWorld) -> None:
    # A client that sends no x-amz-content-sha256 (other services do not): egress reads the
    # whole body, hashes it, and signs; S3 checks the hash against the body.
    body = b"hashed by egress " * 64
    before = len(aws.received())
    with httpx.Client(proxy=aws.proxy.url("storer"), trust_env=False, timeout=15,
                      verify=ssl.create_default_context(cafile=aws.bundle)) as c:
        resp = c.put(f"{aws.s3.endpoint}/{aws.s3.bucket}/hashed.txt", content=body, headers={
            "Authorization": f"AWS4-HMAC-SHA256 Credential={PLACEHOLDER.access_key_id}/"
                             "20240101/us-east-1/s3/aws4_request, SignedHeaders=host, "
                             "Signature=" + "0" * 64})
    assert resp.status_code == 200, resp.text
    put = since(aws, before)[0]
    assert put["headers"]["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
    assert put["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_a_presigned_url_is_signed_with_the_real_keys_instead(aws: AwsWorld) -> None:
    s3 = aws.client(signature_version="s3v4", **UNSIGNED)
    s3.put_object(Bucket=aws.s3.bucket, Key="presigned.txt", Body=b"presigned")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": aws.s3.bucket,
                                                          "Key": "presigned.txt"})
    assert "X-Amz-Signature=" in url and PLACEHOLDER.access_key_id in url
    before = len(aws.received())
    with httpx.Client(proxy=aws.proxy.url("storer"), trust_env=False, timeout=15,
                      verify=ssl.create_default_context(cafile=aws.bundle)) as c:
        resp = c.get(url)
    assert resp.status_code == 200 and resp.content == b"presigned"
    got = since(aws, before)[0]
    assert "X-Amz-Signature" not in got["query"] and PLACEHOLDER.access_key_id not in str(got)


def test_placeholder_key_id_to_another_host_is_refused(aws: AwsWorld) -> None:
    with httpx.Client(proxy=aws.proxy.url("storer"), trust_env=False, timeout=15,
                      verify=ssl.create_default_context(cafile=aws.bundle)) as c:
        resp = c.get(f"https://other.aws.test:{aws.other.port}/echo", headers={
            "Authorization": f"AWS4-HMAC-SHA256 Credential={PLACEHOLDER.access_key_id}/"
                             "20240101/us-east-1/s3/aws4_request"})
        real = c.get(f"https://other.aws.test:{aws.other.port}/echo",
                     params={"id": aws.s3.keys.access_key_id if aws.s3.keys else ""})
    assert resp.status_code == 403 and resp.json()["reason"] == "credential_exfiltration"
    assert real.status_code == 403 and real.json()["reason"] == "credential_exfiltration"


def test_the_real_keys_never_reach_the_skill_or_the_logs(aws: AwsWorld) -> None:
    s3 = aws.client(**UNSIGNED)
    with pytest.raises(ClientError):  # an error answer that names the key id it was sent
        s3.get_object(Bucket=aws.s3.bucket, Key="does-not-exist")
    assert aws.s3.keys is not None and aws.s3.session_keys is not None
    text = aws.proxy.audit_path.read_text() + aws.proxy.log()
    for secret in (aws.s3.keys.secret_access_key, aws.s3.keys.access_key_id,
                   aws.s3.session_keys.secret_access_key, aws.s3.session_keys.session_token or ""):
        assert secret and secret not in text


def _admin(aws: AwsWorld, method: str, path: str) -> httpx.Response:
    admin = json.loads((aws.proxy.data_dir / "admin.json").read_text())
    with httpx.Client(timeout=10, trust_env=False) as c:
        return c.request(method, admin["url"] + path, json={},
                         headers={"Authorization": f"Bearer {admin['token']}"})


@pytest.mark.parametrize("hashed_by", ["sdk", "egress"])
def test_an_approved_write_is_signed_after_the_person_approves(aws: AwsWorld,
                                                                hashed_by: str) -> None:
    # An approval rule on a SigV4 host: the held request reaches S3 only once approved, signed
    # then with the real keys (a body egress hashes is hashed after approval, what was shown);
    # the SDK's retry signs afresh (new X-Amz-Date), and is still the identical request.
    key, body = f"{aws.s3.bucket}/approved/{hashed_by}.txt", f"approved {hashed_by}".encode()
    before = len(aws.received())

    def put() -> httpx.Response:
        headers = {"Authorization": f"AWS4-HMAC-SHA256 Credential={PLACEHOLDER.access_key_id}"
                                    f"/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, "
                                    f"Signature={os.urandom(32).hex()}",
                   "X-Amz-Date": f"20240101T0000{os.urandom(1)[0] % 60:02d}Z"}
        if hashed_by == "sdk":
            headers["X-Amz-Content-Sha256"] = hashlib.sha256(body).hexdigest()
        with httpx.Client(proxy=aws.proxy.url("storer"), trust_env=False, timeout=15,
                          verify=ssl.create_default_context(cafile=aws.bundle)) as c:
            return c.put(f"{aws.s3.endpoint}/{key}", content=body, headers=headers)

    first = put()
    assert first.status_code == 428 and first.json()["reason"] == "approval_pending"
    assert since(aws, before) == []  # held: nothing reached S3
    approval = first.json()["approval_id"]
    assert _admin(aws, "POST", f"/api/approvals/{approval}/approve").status_code == 200
    second = put()
    assert second.status_code == 200, second.text
    third = put()  # an approval covers one request
    assert third.status_code == 428 and third.json()["approval_id"] != approval
    _admin(aws, "POST", f"/api/approvals/{third.json()['approval_id']}/deny")
    records = since(aws, before)
    assert [(r["method"], r["status"]) for r in records] == [("PUT", 200)]
    assert aws.s3.keys is not None
    assert f"Credential={aws.s3.keys.access_key_id}/" in authorization(records[0])
    assert records[0]["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert records[0]["headers"]["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
    steps = [r["reason"] for r in aws.proxy.audit() if r.get("approval") == approval]
    assert steps[:2] == ["approval_requested", "approval_pending"]
    assert "approval_granted" in steps
