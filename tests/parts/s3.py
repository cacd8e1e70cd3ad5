"""An S3-compatible server that verifies AWS Signature Version 4: moto, auth on, over TLS.

    with s3_server(tmp_path, test_ca) as s3:
        s3.endpoint        # https://s3.aws.test:PORT   (path style; BUCKET.s3.aws.test works too)
        s3.address         # ("127.0.0.2", PORT): where DNS / the proxy must send those names
        s3.keys            # AwsKeys of an IAM user allowed s3:* (AKIA..., secret)
        s3.session_keys    # AwsKeys of an assumed role (ASIA..., secret, session token)
        s3.bucket          # an existing bucket
        s3.client(keys, proxy=url)   # a boto3 S3 client for that endpoint, trusting the test CA
        s3.requests()      # what the server received (headers as sent), newest last

What it is. moto (PyPI ``moto[server]``) in server mode, in a child process, with IAM
authentication switched on after set-up (``POST /moto-api/reset-auth 0``: from then on every
request is authenticated). For S3, moto's ``S3IAMRequest.check_signature`` rebuilds the
canonical request from what it received (method, path, query, the headers named in
SignedHeaders, ``x-amz-content-sha256``) with botocore's ``S3SigV4Auth`` and the secret it
holds for the access key id, and compares signatures: a wrong secret, a tampered signed
header, path or query is ``403 SignatureDoesNotMatch``; an unknown key id is
``InvalidAccessKeyId``; a session token on a user key, or a wrong token on an assumed-role
key, is ``InvalidToken``. The child (``_s3_server.py``) adds S3's checks moto leaves out:
the body's SHA-256 against ``x-amz-content-sha256`` (XAmzContentSHA256Mismatch), the header
being present, ``host`` and every ``x-amz-*`` header signed, and a 15-minute clock skew.

Routing. moto takes the service from the credential scope of the Authorization header. With
``MOTO_S3_CUSTOM_ENDPOINTS`` set to this endpoint, ``Host: s3.aws.test:PORT`` is path-style
(``/BUCKET/KEY``) and ``Host: BUCKET.s3.aws.test:PORT`` is virtual-hosted (``/KEY``), as on
AWS. TLS uses a certificate from the test CA for ``s3.aws.test``, ``*.s3.aws.test`` and the
listening address.

Clients. boto3 >= 1.36 uploads (PutObject, UploadPart) as ``aws-chunked`` with
``x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER`` and a CRC trailer by default;
``client(..., request_checksum_calculation="when_required")`` gives the classic
``UNSIGNED-PAYLOAD`` (and ``s3={"payload_signing_enabled": True}`` a signed SHA-256 payload).
Through egress: ``s3.client(AwsKeys("AKIA...", "placeholder"), proxy=egress_url,
ca_path=egress_ca)`` — the server must see the real keys, or it answers InvalidAccessKeyId.

Not implemented (moto or here): chunk signatures (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) and
trailing checksums of ``aws-chunked`` uploads are decoded, not verified; presigned-URL
expiry; region mismatch errors (AuthorizationHeaderMalformed); SigV2; state survives only as
long as the process (a restart starts empty, with new keys). Follows AWS's "Authenticating
Requests (AWS Signature Version 4)" for Amazon S3 and S3's error code list.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.parts.tlsfiles import write_cert
from tests.processes import kill_now, stop_gently
from tests.upstream import free_port

if TYPE_CHECKING:
    from tests.conftest import TestCA

__all__ = ["AwsKeys", "S3Server", "s3_server"]

START_TIMEOUT = 30.0  # moto imports a lot; a loaded 2-core machine needs the margin
STOP_TIMEOUT = 5.0
USER_POLICY = {"Version": "2012-10-17",
               "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
ACCOUNT = "123456789012"  # moto's default account id


@dataclass(frozen=True)
class AwsKeys:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # keep secrets out of assertion output
        return f"AwsKeys({self.access_key_id!r}, ***{', token' if self.session_token else ''})"


class S3Server:
    """One moto child process. Use ``s3_server`` so it is always stopped."""

    def __init__(self, workdir: Path, ca_path: str, cert: Path, key: Path, *, host: str,
                 domain: str, region: str, bucket: str) -> None:
        self.workdir = workdir
        self.ca_path = ca_path
        self.host = host
        self.port = free_port(host)
        self.domain = domain
        self.region = region
        self.bucket = bucket
        self.cert, self.key = cert, key
        self.log_file = workdir / "moto.log"
        self.request_log = workdir / "requests.jsonl"
        self.keys: AwsKeys | None = None
        self.session_keys: AwsKeys | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- addresses ---------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"https://{self.domain}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def direct_endpoint(self) -> str:
        """By address (no DNS needed): path-style only."""
        return f"https://{self.host}:{self.port}"

    # -- process -----------------------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            raise RuntimeError("moto is already running")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
        env.update(MOTO_S3_CUSTOM_ENDPOINTS=f"{self.endpoint},https://{self.domain}",
                   MOTO_PORT=str(self.port), AWS_DEFAULT_REGION=self.region,
                   PYTHONDONTWRITEBYTECODE="1")
        self.request_log.write_text("")
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("_s3_server.py")), self.host,
                 str(self.port), str(self.cert), str(self.key), str(self.request_log)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=self.workdir)
        try:
            self._wait_ready()
            self._set_up()
        except BaseException:
            self.stop()
            raise

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _moto_api(self, path: str, data: bytes | None = None, timeout: float = 2.0) -> bytes:
        req = urllib.request.Request(f"{self.direct_endpoint}/moto-api/{path}", data=data,
                                     method="POST" if data is not None else "GET",
                                     # not a form: moto reads the raw body as the count
                                     headers={"Content-Type": "text/plain"})
        import ssl

        context = ssl.create_default_context(cafile=self.ca_path)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=context))
        with opener.open(req, timeout=timeout) as resp:
            return bytes(resp.read())

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        for _ in range(int(START_TIMEOUT / 0.1) + 1):
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto exited with {self._proc.returncode}:\n"
                                   f"{self.log_tail()}")
            with contextlib.suppress(OSError):
                self._moto_api("data.json", timeout=1.0)
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        raise RuntimeError(f"moto did not answer in {START_TIMEOUT}s:\n{self.log_tail()}")

    def _set_up(self) -> None:
        """IAM user + key, a role to assume (session credentials), the bucket; then auth on."""
        boot = AwsKeys("AKIABOOTSTRAPNOAUTH0", "bootstrap")  # accepted only while auth is off
        iam = self._client("iam", boot)
        iam.create_user(UserName="egress-test")
        iam.put_user_policy(UserName="egress-test", PolicyName="s3-all",
                            PolicyDocument=json.dumps(USER_POLICY))
        made = iam.create_access_key(UserName="egress-test")["AccessKey"]
        self.keys = AwsKeys(made["AccessKeyId"], made["SecretAccessKey"])
        trust = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
            "Action": "sts:AssumeRole"}]}
        role = iam.create_role(RoleName="egress-test-role",
                               AssumeRolePolicyDocument=json.dumps(trust))["Role"]
        iam.put_role_policy(RoleName="egress-test-role", PolicyName="s3-all",
                            PolicyDocument=json.dumps(USER_POLICY))
        creds = self._client("sts", boot).assume_role(
            RoleArn=role["Arn"], RoleSessionName="egress-test")["Credentials"]
        self.session_keys = AwsKeys(creds["AccessKeyId"], creds["SecretAccessKey"],
                                    creds["SessionToken"])
        s3 = self._client("s3", boot)
        if self.region == "us-east-1":
            s3.create_bucket(Bucket=self.bucket)
        else:
            s3.create_bucket(Bucket=self.bucket,
                             CreateBucketConfiguration={"LocationConstraint": self.region})
        # From here on every request must carry a valid signature.
        self._moto_api("reset-auth", b"0")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        kill_now(self._proc, STOP_TIMEOUT)

    def stop(self) -> None:
        stop_gently(self._proc, STOP_TIMEOUT)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- clients and records -----------------------------------------------------------------

    def _client(self, service: str, keys: AwsKeys) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            service, region_name=self.region, endpoint_url=self.direct_endpoint,
            aws_access_key_id=keys.access_key_id, aws_secret_access_key=keys.secret_access_key,
            aws_session_token=keys.session_token, verify=self.ca_path,
            config=Config(retries={"max_attempts": 1}, proxies={}))

    def client(self, keys: AwsKeys | None = None, *, proxy: str | None = None,
               addressing: str = "path", ca_path: str | None = None, **config: Any) -> Any:
        """A boto3 S3 client for ``endpoint`` signing with ``keys`` (the IAM user's by
        default). ``proxy`` is an http:// proxy URL (egress, or a test tunnel): the names
        resolve there. ``addressing`` is "path" or "virtual"; ``config`` goes to
        botocore's Config (e.g. ``s3={"payload_signing_enabled": True}``)."""
        import boto3
        from botocore.config import Config

        keys = keys or self.keys
        assert keys is not None
        s3_config = {"addressing_style": addressing, **config.pop("s3", {})}
        return boto3.client(
            "s3", region_name=self.region, endpoint_url=self.endpoint,
            aws_access_key_id=keys.access_key_id, aws_secret_access_key=keys.secret_access_key,
            aws_session_token=keys.session_token, verify=ca_path or self.ca_path,
            config=Config(retries={"max_attempts": 1}, s3=s3_config,
                          proxies={"https": proxy} if proxy else {}, **config))

    def requests(self) -> list[dict[str, Any]]:
        """Every request the server received since start (set-up included), oldest first:
        method, host, path, query, headers (lowercased, as received), body_sha256,
        body_length and the status it answered."""
        lines = self.request_log.read_text().splitlines() if self.request_log.exists() else []
        return [json.loads(line) for line in lines if line]


@contextlib.contextmanager
def s3_server(workdir: Path, ca: TestCA, *, host: str = "127.0.0.2",
              domain: str = "s3.aws.test", region: str = "us-east-1",
              bucket: str = "egress-test-bucket") -> Iterator[S3Server]:
    """Start moto for ``domain`` on host:free-port with a user, a role session and a bucket;
    stop it on the way out, whatever happened."""
    workdir.mkdir(parents=True, exist_ok=True)
    files = write_cert(ca.ca, [domain, f"*.{domain}", host], workdir, "s3")
    server = S3Server(workdir, ca.path, files.cert, files.key, host=host, domain=domain,
                      region=region, bucket=bucket)
    try:
        server.start()
        yield server
    finally:
        server.stop()
