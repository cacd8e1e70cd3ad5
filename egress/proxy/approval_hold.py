"""Holding a request for a person's approval: mitmproxy glue for egress/ops/approvals.py.

    requestheaders  the gate admits a request with `approval` set: nothing is forwarded yet.
                    `prepare` refuses a compressed body (approval_body_encoded, 415) or a
                    Content-Length over settings.approvals.max_body (approval_body_too_large,
                    413), else turns streaming off so mitmproxy reads the body whole.
    (body arrives)  `install()` caps what mitmproxy buffers for a held request at max_body,
                    also without a Content-Length (chunked, HTTP/2), and keeps mitmproxy's
                    stream_large_bodies from streaming it: over the cap the request fails
                    with 413 and one audit line, nothing sent upstream.
    request         `hold`: the whole body is in memory; a body carrying another credential is
                    refused (credential_exfiltration); the person sees the masked request
                    (egress/ops/approval_view.py); the ApprovalBook waits up to `wait`:
                    approved -> forwarded as is, the exact bytes that were shown (checked
                    again against the digest); refused -> 403 approval_denied; undecided ->
                    428 approval_pending with the approval id; too many open -> 429.

Upstream sees nothing of a held request until it is approved: the upstream connection is
opened (lazily) only when mitmproxy forwards the request after this hook returns.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from mitmproxy import http

from egress.credentials.detect import content_carries
from egress.ops.approval_view import request_view
from egress.ops.approvals import ApprovalBook, HeldRequest, Outcome, request_key
from egress.ops.runtime import Runtime
from egress.policy.model import ApprovalSettings
from egress.proxy.flows import response
from egress.proxy.gate import Admitted, Arrival, Refused
from egress.proxy.record import Recorder
from egress.reasons import Reason

__all__ = ["HOLD_CAP", "ApprovalHold", "install"]

log = logging.getLogger("egress")

HOLD_CAP = "egress_approval_body_cap"  # flow.metadata: bytes mitmproxy may buffer, held flows
OVER_CAP = "egress: approval_body_too_large"  # flow.error of a held body over the cap
_IDENTITY = ("", "identity")
_AWS_SIGNING_HEADERS = ("authorization", "x-amz-date", "x-amz-content-sha256",
                        "x-amz-security-token")


@dataclass(frozen=True)
class _Held:
    arrival: Arrival
    admitted: Admitted
    resolved: str | None
    needles: tuple[str, ...]  # placeholders and keys to mask in what the person sees
    injected_header: tuple[str, ...]  # the credential's header: not part of the identity


class ApprovalHold:
    def __init__(self, book: ApprovalBook, recorder: Recorder,
                 runtime: Callable[[], Runtime | None],
                 known_secrets: Callable[[str], list[str]]) -> None:
        """`known_secrets(skill)`: the placeholders and real keys of the skill's credentials
        fetched so far (masked wherever they appear in what the person sees)."""
        self.book, self._recorder, self._runtime = book, recorder, runtime
        self._known_secrets = known_secrets
        self._held: weakref.WeakKeyDictionary[http.HTTPFlow, _Held] = (
            weakref.WeakKeyDictionary())

    def settings(self) -> ApprovalSettings:
        rt = self._runtime()
        return rt.policy.settings.approvals if rt is not None else ApprovalSettings()

    # -- requestheaders ------------------------------------------------------------------
    def prepare(self, flow: http.HTTPFlow, what: Arrival, admitted: Admitted,
                resolved: str | None) -> Refused | None:
        """Read the body whole instead of streaming it, or refuse what no one could review."""
        req = flow.request
        encoding = req.headers.get("content-encoding", "").strip().lower()
        if encoding not in _IDENTITY:
            return self._refusal(admitted, Reason.APPROVAL_BODY_ENCODED,
                                 f"Content-Encoding {encoding[:40]!r}")
        cap = self.settings().max_body
        length = req.headers.get("content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > cap):
            return self._refusal(admitted, Reason.APPROVAL_BODY_TOO_LARGE,
                                 f"Content-Length {length.strip()[:20]} over {cap} bytes")
        req.stream = False  # mitmproxy reads it whole; `hold` runs when it has
        flow.metadata[HOLD_CAP] = cap
        needles = tuple(self._known_secrets(admitted.skill))
        if admitted.credential is not None:
            needles += (admitted.credential.secret.reveal(),)
        self._held[flow] = _Held(what, admitted, resolved, needles,
                                 self._credential_header(admitted))
        return None

    # -- request -------------------------------------------------------------------------
    def held(self, flow: http.HTTPFlow) -> bool:
        return flow in self._held

    async def hold(self, flow: http.HTTPFlow) -> http.Response | None:
        """The body is complete: ask, wait, and answer. None: forward the request as is."""
        held = self._held.pop(flow, None)
        if held is None:
            return None
        refused = await self._decide(flow, held)
        if refused is None:
            return None
        return response(self._recorder.refused(held.arrival, refused))

    async def _decide(self, flow: http.HTTPFlow, held: _Held) -> Refused | None:
        flow.metadata.pop(HOLD_CAP, None)
        admitted, what, req = held.admitted, held.arrival, flow.request
        body = req.raw_content or b""
        for name, values in admitted.unbound.items():
            if any(content_carries(v, body) for v in values):
                return self._refusal(admitted, Reason.CREDENTIAL_EXFILTRATION,
                                     f"request body carries credential {name}, bound to "
                                     f"other hosts")
        held_req = self._held_request(held, flow, body)
        answer = await self.book.hold(held_req, alive=lambda: flow.client_conn.connected)
        entry = answer.approval
        approval_id = entry.id if entry is not None else None
        if answer.outcome is Outcome.FORWARD and entry is not None:
            now_key, _ = self._key(held, flow, req.raw_content or b"")
            if now_key != held_req.key:  # nothing may change what was approved
                log.error("egress: an approved request changed while held; refusing it")
                return self._refusal(admitted, Reason.INTERNAL_ERROR,
                                     "request changed after approval", approval_id)
            self._recorder.allowed(what, admitted, held.resolved, approval=entry.id,
                                   detail=f"approved by {entry.decided_by}")
            return None
        if answer.outcome is Outcome.DENIED and entry is not None:
            return self._refusal(admitted, Reason.APPROVAL_DENIED,
                                 f"refused by {entry.decided_by}", approval_id)
        if answer.outcome is Outcome.FULL:
            return self._refusal(admitted, Reason.APPROVAL_QUEUE_FULL,
                                 f"{self.book.pending_count(admitted.skill)} approvals open, "
                                 f"{self.book.held_count(admitted.skill)} requests held "
                                 f"(settings.approvals.max_pending "
                                 f"{self.settings().max_pending})")
        if answer.outcome is Outcome.UNAVAILABLE:
            return self._refusal(admitted, Reason.APPROVAL_UNAVAILABLE,
                                 "no admin endpoint: nobody can approve")
        return self._refusal(admitted, Reason.APPROVAL_PENDING,
                             f"nobody decided within {held_req.wait:g}s", approval_id)

    def error(self, flow: http.HTTPFlow) -> None:
        """A held request mitmproxy gave up on: over the body cap (audited), or the client left."""
        held = self._held.pop(flow, None)
        if held is None:
            return
        if flow.error is not None and flow.error.msg == OVER_CAP:
            refused = self._refusal(held.admitted, Reason.APPROVAL_BODY_TOO_LARGE,
                                    f"body over {self.settings().max_body} bytes")
            self._recorder.refused(held.arrival, refused)

    # -- inside --------------------------------------------------------------------------
    def _held_request(self, held: _Held, flow: http.HTTPFlow, body: bytes) -> HeldRequest:
        admitted, req = held.admitted, flow.request
        key, digest = self._key(held, flow, body)
        path, _, query = (held.arrival.path or "").partition("?")
        view = request_view(path=path, query=query, headers=held.arrival.headers, body=body,
                            needles=held.needles)
        rule, approval = admitted.decision.rule, admitted.approval
        assert rule is not None and approval is not None
        return HeldRequest(
            skill=admitted.skill, method=admitted.dest.method or req.method,
            scheme=held.arrival.scheme or req.scheme, host=admitted.dest.host,
            port=admitted.dest.port, path=path, key=key, body_digest=digest, view=view,
            rule=rule.label, request_id=admitted.request_id, wait=approval.wait,
            valid_for=approval.valid_for, client=held.arrival.peer,
            credential=admitted.credential.credential if admitted.credential else None)

    @staticmethod
    def _key(held: _Held, flow: http.HTTPFlow, body: bytes) -> tuple[str, str]:
        """The identity of the request as it will be forwarded: method, the judged host and
        port, the target as sent (path and query), the body, the headers (but for volatile
        ones and the one the credential is injected into)."""
        admitted, req = held.admitted, flow.request
        path, _, query = req.path.partition("?")
        return request_key(
            skill=admitted.skill, method=req.data.method.decode("latin-1"),
            scheme=req.scheme, host=admitted.dest.host, port=admitted.dest.port, path=path,
            query=query, body=body, headers=req.headers.items(multi=True),
            ignore=held.injected_header)

    def _credential_header(self, admitted: Admitted) -> tuple[str, ...]:
        rt = self._runtime()
        if admitted.credential is None or rt is None:
            return ()
        skill = rt.policy.skills.get(admitted.skill)
        cred = skill.credentials.get(admitted.credential.credential) if skill else None
        if cred is None:
            return ()
        if cred.shape == "aws_sigv4":  # an SDK's retry signs again, at another time
            return _AWS_SIGNING_HEADERS
        if cred.shape in ("basic", "oauth2"):
            return ("authorization",)
        return (cred.header,)

    @staticmethod
    def _refusal(admitted: Admitted, reason: Reason, detail: str,
                 approval: str | None = None) -> Refused:
        return Refused(reason, detail, admitted.skill, admitted.dest, admitted.request_id,
                       admitted.decision, counted=True, approval=approval)


def install() -> None:
    """Cap the body mitmproxy buffers for a held request (flow.metadata[HOLD_CAP]), and never
    let stream_large_bodies start streaming it: a held request is forwarded whole or not at all.

    Wraps mitmproxy's private HttpStream.check_body_size; refuses loudly when its shape
    changed (the test suite runs it against the installed mitmproxy)."""
    from mitmproxy import flow as mflow
    from mitmproxy.proxy.layers import http as mhttp
    from mitmproxy.proxy.layers.http import _events, _hooks

    stream_cls = mhttp.HttpStream
    original: Callable[..., Generator[Any, Any, bool]] = stream_cls.check_body_size
    if getattr(original, "_egress_hold", False):
        return
    if not callable(original) or not hasattr(_events, "ResponseProtocolError"):
        raise RuntimeError("this mitmproxy version has no HttpStream.check_body_size to guard")

    def check_body_size(self: Any, request: bool) -> Generator[Any, Any, bool]:
        flow: http.HTTPFlow | None = getattr(self, "flow", None)
        cap = flow.metadata.get(HOLD_CAP) if request and flow is not None else None
        if cap is None or flow is None:
            return (yield from original(self, request))
        if len(self.request_body_buf) <= cap:
            return False  # held: buffered whole, never streamed
        flow.error = mflow.Error(OVER_CAP)
        yield _hooks.HttpErrorHook(flow)
        yield mhttp.SendHttp(_events.ResponseProtocolError(
            self.stream_id, f"{OVER_CAP}: the body is larger than egress holds for approval "
                            f"({cap} bytes, settings.approvals.max_body)",
            _events.ErrorCode.REQUEST_TOO_LARGE), self.context.client)
        self.client_state = self.state_errored
        self.request_body_buf.clear()
        flow.live = False
        return True

    check_body_size._egress_hold = True  # type: ignore[attr-defined]
    stream_cls.check_body_size = check_body_size  # type: ignore[method-assign]
