"""How a brokered credential travels: the injection shapes of a credential, as plain data.

    header     (default) `header: NAME` set to `format` ("Bearer {secret}"), or the skill's
               placeholder replaced in header values
    query      `query: PARAM`: the key is the value of query parameter PARAM (the skill's
               placeholder value replaced, or the parameter added)
    basic      `basic: {username: NAME}`: `Authorization: Basic base64(NAME:key)`
    aws_sigv4  `aws_sigv4: {access_key_id: REF, region, service, session_token: REF}`: the
               key is the secret access key; egress re-signs the request (AWS Signature V4)
    oauth2     `oauth2: {token_url, client_id: REF, client_secret: REF, scope, refresh_token:
               REF}`: egress mints an access token (client credentials, or the refresh grant)
               and sends `Authorization: Bearer TOKEN`

Parsers take the YAML value already constructed into Python (strings, mappings) and raise
`SettingsFieldError(field, message)` with the field relative to the shape's key; the loader
adds file and line. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from egress.policy.secret_refs import SecretRef, parse_secret_ref
from egress.policy.secret_settings import SettingsFieldError

__all__ = ["SHAPE_KEYS", "AwsSigV4", "BasicAuth", "OAuth2", "Shape", "parse_aws_sigv4",
           "parse_basic", "parse_oauth2", "parse_query_param"]

Shape = Literal["header", "query", "basic", "aws_sigv4", "oauth2"]
SHAPE_KEYS: tuple[str, ...] = ("query", "basic", "aws_sigv4", "oauth2")

# A query parameter name: what an HTTP client writes unescaped (RFC 3986 unreserved).
_PARAM = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+)+-\d+|[a-z0-9-]{2,32}")
_SERVICE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 3.3 scope-token


@dataclass(frozen=True)
class BasicAuth:
    username: str  # may be empty ("key:" APIs); never a secret


@dataclass(frozen=True)
class AwsSigV4:
    access_key_id: SecretRef
    region: str
    service: str
    session_token: SecretRef | None = None


@dataclass(frozen=True)
class OAuth2:
    token_url: str  # https://host[:port]/path
    client_id: SecretRef
    client_secret: SecretRef
    scope: str | None = None
    refresh_token: SecretRef | None = None  # None: the client-credentials grant

    @property
    def grant(self) -> str:
        return "refresh_token" if self.refresh_token is not None else "client_credentials"

    @property
    def token_host(self) -> str:
        return (urlsplit(self.token_url).hostname or "").lower()

    @property
    def token_port(self) -> int:
        return urlsplit(self.token_url).port or 443


def parse_query_param(raw: object) -> str:
    if not isinstance(raw, str) or not _PARAM.fullmatch(raw):
        raise SettingsFieldError("", "must be a query parameter name (letters, digits, "
                                     "'-._~'), e.g. query: key")
    return raw


def parse_basic(raw: object) -> BasicAuth:
    m = _mapping(raw, "", "a mapping {username: NAME}, e.g. basic: {username: api}")
    _known(m, "", ("username",))
    user = m.get("username")
    if not isinstance(user, str):
        raise SettingsFieldError("username", "required: the user name sent with the key "
                                             "(\"\" for none), e.g. username: api")
    if ":" in user or any(ord(c) < 0x20 or ord(c) == 0x7f for c in user):
        raise SettingsFieldError("username", "may not hold ':' or control characters")
    return BasicAuth(user)


def parse_aws_sigv4(raw: object) -> AwsSigV4:
    m = _mapping(raw, "", "a mapping with access_key_id, region and service")
    _known(m, "", ("access_key_id", "region", "service", "session_token"))
    key_id = _ref(m, "access_key_id", required=True)
    assert key_id is not None
    region = m.get("region")
    if not isinstance(region, str) or not _REGION.fullmatch(region):
        raise SettingsFieldError("region", "required: the AWS region requests are signed for, "
                                           "e.g. region: us-east-1")
    service = m.get("service")
    if not isinstance(service, str) or not _SERVICE.fullmatch(service):
        raise SettingsFieldError("service", "required: the AWS service signing name, "
                                            "e.g. service: s3")
    return AwsSigV4(key_id, region, service, _ref(m, "session_token", required=False))


def parse_oauth2(raw: object) -> OAuth2:
    m = _mapping(raw, "", "a mapping with token_url, client_id and client_secret")
    _known(m, "", ("token_url", "client_id", "client_secret", "scope", "refresh_token"))
    url = m.get("token_url")
    example = "e.g. token_url: https://auth.example.com/oauth/token"
    if not isinstance(url, str):
        raise SettingsFieldError("token_url", f"required: the token endpoint, {example}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        raise SettingsFieldError("token_url", f"is not a valid URL, {example}") from None
    if parts.scheme != "https":
        # The client secret and refresh token travel there: only over verified TLS.
        raise SettingsFieldError("token_url", f"must be https:// (the client secret goes "
                                              f"there), {example}")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise SettingsFieldError("token_url", f"needs a host and no user:password@, {example}")
    if parts.fragment:
        raise SettingsFieldError("token_url", f"remove the '#...' part, {example}")
    client_id = _ref(m, "client_id", required=True)
    client_secret = _ref(m, "client_secret", required=True)
    assert client_id is not None and client_secret is not None
    scope = m.get("scope")
    if scope is not None:
        if not isinstance(scope, str) or not all(_SCOPE_TOKEN.fullmatch(t)
                                                 for t in scope.split(" ")):
            raise SettingsFieldError("scope", "must be space-separated scope names, "
                                              "e.g. scope: read write")
    return OAuth2(url, client_id, client_secret, scope, _ref(m, "refresh_token", required=False))


def _ref(m: Mapping[str, object], key: str, *, required: bool) -> SecretRef | None:
    if key not in m or m[key] is None:
        if required:
            raise SettingsFieldError(key, "required: a secret reference, e.g. "
                                          f"{key}: vault:secret/app#{key}")
        return None
    value = m[key]
    if not isinstance(value, str):
        raise SettingsFieldError(key, "must be a secret reference (vault:, op://, doppler:, "
                                      "env: or file:)")
    try:
        return parse_secret_ref(value)
    except ValueError as exc:
        raise SettingsFieldError(key, str(exc)) from None


def _mapping(raw: object, where: str, expected: str) -> Mapping[str, object]:
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) for k in raw):
        raise SettingsFieldError(where, f"must be {expected}")
    return raw


def _known(m: Mapping[str, object], where: str, known: tuple[str, ...]) -> None:
    for key in m:
        if key not in known:
            raise SettingsFieldError(f"{where}.{key}" if where else key,
                                     f"unknown key; expected one of: {', '.join(known)}")
