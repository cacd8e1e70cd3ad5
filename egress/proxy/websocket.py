"""WebSocket under egress: messages stream through, are capped in size, and never carry keys away.

mitmproxy's WebsocketLayer keeps every message on `flow.websocket.messages` for the life of
the connection and buffers an unfinished (fragmented) message without limit: 64 MiB of
messages took egress from 93 MB to 231 MB of RSS (issue 17). `install()` wraps the layer's
`relay_messages` so that:
  * each message is dropped from the flow as soon as the hooks have seen it (nothing retained);
  * a message larger than the flow's cap (settings.websocket.max_message), finished or still
    arriving in fragments, closes both sides: 1009 to its sender, 1001 to the other;
  * a message the `websocket_message` hook refused (WebSocketGuard: a placeholder or real key,
    raw or encoded (egress/credentials/detect.py), to a host the credential is not bound to) closes both sides: 1008 to the client.
Either refusal is left on the flow; WebSocketGuard.end() writes its one audit line.

Like header_limit, install() wraps a private mitmproxy method: it checks the shape it wraps and
refuses loudly (the test suite runs it against the installed mitmproxy) rather than silently not
protecting.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from egress.credentials.broker import CredentialBroker
from egress.policy.decide import Destination
from egress.policy.model import PolicySet
from egress.proxy.bodies import redact_message
from egress.proxy.flows import peer_address, request_line
from egress.proxy.record import Recorder
from egress.reasons import Reason
from egress.secrets import Secret

if TYPE_CHECKING:
    from mitmproxy import http


__all__ = ["DEFAULT_MAX_MESSAGE", "WebSocketGuard", "WsRefusal", "install"]

DEFAULT_MAX_MESSAGE = 4 * 2**20  # settings.websocket.max_message when no policy says otherwise
LIMIT_KEY = "egress_ws_max_message"
REFUSAL_KEY = "egress_ws_refusal"
CLOSE_TOO_BIG = 1009  # RFC 6455 7.4.1: message too big to process
CLOSE_POLICY = 1008  # policy violation
CLOSE_GOING_AWAY = 1001

log = logging.getLogger("egress")


@dataclass(frozen=True)
class WsRefusal:
    reason: Reason
    code: int  # close code sent to the side that sent the message
    from_client: bool
    detail: str


@dataclass(frozen=True)
class _Endpoint:
    skill: str
    dest: Destination  # the upgrade request as judged: host, port, method, path
    tls: bool  # inside TLS egress terminated, upstream certificate verified


class WebSocketGuard:
    """The addon's WebSocket hooks: the size cap of each flow, the key check on client
    messages, and the audit line of a refused connection."""

    def __init__(self, policy: Callable[[], PolicySet | None], credentials: CredentialBroker,
                 recorder: Recorder) -> None:
        self._policy = policy
        self._credentials = credentials
        self._recorder = recorder
        self._endpoints: weakref.WeakKeyDictionary[http.HTTPFlow, _Endpoint] = (
            weakref.WeakKeyDictionary())

    def admitted(self, flow: http.HTTPFlow, skill: str, dest: Destination, *, tls: bool) -> None:
        """A request was allowed: remember who and where, should it become a WebSocket."""
        if flow.request.headers.get("Upgrade", "").strip().lower() == "websocket":
            self._endpoints[flow] = _Endpoint(skill, dest, tls)

    def start(self, flow: http.HTTPFlow) -> None:
        policy = self._policy()
        flow.metadata[LIMIT_KEY] = (policy.settings.websocket.max_message
                                    if policy is not None else DEFAULT_MAX_MESSAGE)

    def message(self, flow: http.HTTPFlow) -> None:
        assert flow.websocket is not None
        message = flow.websocket.messages[-1]
        if not message.from_client:
            return
        endpoint = self._endpoints.get(flow)
        policy = self._policy()
        if endpoint is None or policy is None:
            # Every WebSocket egress relays was admitted as a request: never happens; fail closed.
            self._refuse(flow, message, WsRefusal(Reason.INTERNAL_ERROR, CLOSE_POLICY, True,
                                                  "WebSocket message on a connection egress "
                                                  "did not admit"))
            return
        skill = policy.skills.get(endpoint.skill)
        if skill is None or not skill.credentials:
            return
        stray = self._credentials.stray_in_message(skill, message.content, endpoint.dest,
                                                   verified_tls=endpoint.tls)
        if stray:
            self._refuse(flow, message, WsRefusal(
                Reason.CREDENTIAL_EXFILTRATION, CLOSE_POLICY, True,
                f"WebSocket message carries credential {', '.join(stray)} bound to other hosts"
                if endpoint.tls else
                f"WebSocket message carries credential {', '.join(stray)} outside verified TLS"))

    @staticmethod
    def redact_echo(flow: http.HTTPFlow, secrets: Sequence[Secret]) -> None:
        """Redact the key in a message from an upstream egress gave it to (an echo)."""
        if not secrets or flow.websocket is None or not flow.websocket.messages:
            return
        message = flow.websocket.messages[-1]
        if not message.from_client:
            cleaned = redact_message(message.content, *(s.reveal() for s in secrets))
            if cleaned is not None:
                message.content = cleaned

    @staticmethod
    def _refuse(flow: http.HTTPFlow, message: Any, refusal: WsRefusal) -> None:
        message.drop()
        flow.metadata[REFUSAL_KEY] = refusal

    @staticmethod
    def fail_closed(flow: http.HTTPFlow) -> None:
        """An error while checking the last message: drop it and close the connection."""
        assert flow.websocket is not None
        WebSocketGuard._refuse(flow, flow.websocket.messages[-1], WsRefusal(
            Reason.INTERNAL_ERROR, CLOSE_POLICY, flow.websocket.messages[-1].from_client,
            "error checking a WebSocket message"))

    def end(self, flow: http.HTTPFlow) -> None:
        endpoint = self._endpoints.pop(flow, None)
        refusal: WsRefusal | None = flow.metadata.get(REFUSAL_KEY)
        if refusal is None:
            return
        skill = endpoint.skill if endpoint is not None else None
        dest = endpoint.dest if endpoint is not None else Destination(flow.request.pretty_host,
                                                                      flow.request.port)
        self._recorder.denied(refusal.reason, kind="websocket", skill=skill, host=dest.host,
                              port=dest.port, client=peer_address(flow.client_conn),
                              detail=refusal.detail, request=request_line(flow))


# -- the layer wrapper ---------------------------------------------------------------------------

def install() -> None:
    from mitmproxy.proxy.layers import websocket as ws_layer

    layer_class = ws_layer.WebsocketLayer
    original: Callable[..., Generator[Any, Any, None]] = layer_class.relay_messages
    if getattr(original, "_egress_wrapped", False):
        return
    needed = ("WebsocketMessageHook", "WebsocketEndHook", "WebsocketConnection")
    if not callable(original) or not all(hasattr(ws_layer, n) for n in needed):
        raise RuntimeError("this mitmproxy version has no WebsocketLayer.relay_messages to guard")
    message_hook = ws_layer.WebsocketMessageHook

    def relay_messages(self: Any, event: Any) -> Generator[Any, Any, None]:
        flow = self.flow
        limit = flow.metadata.get(LIMIT_KEY, DEFAULT_MAX_MESSAGE)
        inner = original(self, event)
        reply: Any = None
        while True:
            try:
                command = inner.send(reply)
            except StopIteration:
                break
            if isinstance(command, message_hook):
                message = flow.websocket.messages[-1]
                if len(message.content) > limit:
                    inner.close()
                    yield from _close(self, WsRefusal(
                        Reason.WEBSOCKET_MESSAGE_TOO_BIG, CLOSE_TOO_BIG, message.from_client,
                        f"{_side(message.from_client)} sent a {len(message.content)}-byte "
                        f"message; the limit is {limit}"))
                    return
            reply = yield command
            if isinstance(command, message_hook):
                # Streamed, not retained: the hooks have seen it, the layer keeps its own ref.
                del flow.websocket.messages[:]
                if REFUSAL_KEY in flow.metadata:
                    inner.close()
                    yield from _close(self, flow.metadata[REFUSAL_KEY])
                    return
        for ws, from_client in ((self.client_ws, True), (self.server_ws, False)):
            pending = sum(len(part) for part in ws.frame_buf)
            if pending > limit:
                yield from _close(self, WsRefusal(
                    Reason.WEBSOCKET_MESSAGE_TOO_BIG, CLOSE_TOO_BIG, from_client,
                    f"{_side(from_client)} sent more than {limit} bytes of one unfinished "
                    f"message"))
                return

    def _close(self: Any, refusal: WsRefusal) -> Generator[Any, Any, None]:
        """Close both sides (the sender gets the refusal's code), mark the flow, end it."""
        import wsproto.events
        from mitmproxy.proxy import commands
        from wsproto.connection import ConnectionState

        flow = self.flow
        flow.metadata[REFUSAL_KEY] = refusal
        sender, other = ((self.client_ws, self.server_ws) if refusal.from_client
                         else (self.server_ws, self.client_ws))
        for ws, code in ((sender, refusal.code), (other, CLOSE_GOING_AWAY)):
            if ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                yield ws.send2(wsproto.events.CloseConnection(code=code, reason="egress: "
                                                              + str(refusal.reason)))
        # Server first, as mitmproxy's own close does.
        yield commands.CloseConnection(self.server_ws.conn)
        yield commands.CloseConnection(self.client_ws.conn)
        ws_data = flow.websocket
        ws_data.timestamp_end = time.time()
        ws_data.closed_by_client = False
        ws_data.close_code = refusal.code
        ws_data.close_reason = str(refusal.reason)
        del ws_data.messages[:]
        self.client_ws.frame_buf = [b""]
        self.server_ws.frame_buf = [b""]
        yield ws_layer.WebsocketEndHook(flow)
        flow.live = False
        self._handle_event = self.done

    relay_messages._egress_wrapped = True  # type: ignore[attr-defined]
    relay_messages._egress_original = original  # type: ignore[attr-defined]
    layer_class.relay_messages = relay_messages  # type: ignore[method-assign]


def _side(from_client: bool) -> str:
    return "the client" if from_client else "the server"
