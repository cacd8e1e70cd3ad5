"""EgressAddon: mitmproxy hooks translated into calls of the gate, and its answers applied.

Each hook reads the flow (egress/proxy/flows.py), asks the gate (egress/proxy/gate.py), and
applies the outcome: `_apply` for what the gate decides, `Recorder` (egress/proxy/record.py)
for every refusal the wire itself produces (handshakes, timeouts, messages, bodies).

    client connects    client_connected cap on unauthenticated connections, timeouts start
    CONNECT host:port  http_connect     gate (auth, policy, limits, address); pin, Tunnel
    tunnel bytes       next_layer       egress chooses the layer (egress/proxy/layers.py)
                       tls_clienthello  SNI check again; intercept if a rule looks inside
    request in tunnel  requestheaders   gate (head, upgrade, policy, limits, credential)
    GET http://h/p     requestheaders   gate (auth, head, policy, limits, credential, address)
    whole body         request          an AWS request signed once its body is known
    response           responseheaders  a 101 only for WebSocket; stream; redact the key
    WebSocket message  websocket_message  size cap, no stray keys; redact upstream echoes
    upstream dial      server_connect   last line: only vetted addresses, never refused tunnels
    upstream TLS fails tls_failed_server  audited as upstream_tls_failed
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable

from mitmproxy import connection, ctx, http, tls
from mitmproxy.exceptions import AddonHalt, OptionsError
from mitmproxy.proxy import layer, server_hooks

from egress.audit.records import new_request_id
from egress.credentials.broker import Injected
from egress.errors import PolicyErrors
from egress.ops.approvals import ApprovalBook
from egress.ops.credential_health import watch_secret_status
from egress.ops.datadir import default_data_dir, staged_copy
from egress.ops.metrics import Metrics
from egress.ops.ratelimit import RateLimiter
from egress.ops.runtime import Runtime, flush_audit_periodically
from egress.policy.decide import Destination
from egress.policy.hosts import listen_addresses, parse_ip_literal
from egress.policy.model import ConnectionSettings, PolicySet
from egress.proxy import approval_hold, connclose, header_limit, websocket
from egress.proxy.approval_hold import ApprovalHold
from egress.proxy.bodies import carried_in_body, install_response_guard, request_scanner
from egress.proxy.ca import ca_dir, ensure_ca
from egress.proxy.connections import ConnectionTracker
from egress.proxy.connguard import ConnectionGuard
from egress.proxy.deciding import Deciding
from egress.proxy.flows import arrival, peer_address, request_line, requested_destination, response
from egress.proxy.gate import Admitted, Arrival, Refused
from egress.proxy.handover import Handover, same_request
from egress.proxy.layers import ClosingLayer, LayerChooser, Refusal
from egress.proxy.protocol_audit import ProtocolErrorAudit, install_hostless_log, mitmproxy_refusal
from egress.proxy.tunnels import Tunnel, sni_matches
from egress.proxy.upgrades import switch_refusal
from egress.proxy.websocket import WebSocketGuard
from egress.reasons import Reason
from egress.responses import refusal

__all__ = ["EgressAddon"]

log = logging.getLogger("egress")


class EgressAddon:
    def __init__(self, runtime: Runtime | None = None, *,
                 preloaded: tuple[str, PolicySet] | None = None,
                 deciding: Deciding | None = None) -> None:
        """`runtime` and `deciding`: given by `egress serve`, which shares them with the fast
        path (egress/proxy/front/); under mitmdump the addon builds both from its options."""
        self.runtime = runtime
        self._given = runtime is not None
        self._upstream_hooked = False  # (given runtime) upstream_ca staged, reload hook set
        # (directory, its policy) already loaded by `egress serve`, used by the first configure.
        self._preloaded = preloaded
        # Per client connection (as mitmproxy's proxyauth): its CONNECT, its skill.
        self._tunnels: weakref.WeakKeyDictionary[connection.Client, Tunnel] = (
            weakref.WeakKeyDictionary())
        self._skills: weakref.WeakKeyDictionary[connection.Client, str] = (
            weakref.WeakKeyDictionary())
        # Credentials injected into a flow, kept to redact echoes in its response.
        self._injected: weakref.WeakKeyDictionary[http.HTTPFlow, Injected] = (
            weakref.WeakKeyDictionary())
        # Flows whose body is buffered to be signed (AWS, no x-amz-content-sha256).
        self._buffered: weakref.WeakKeyDictionary[http.HTTPFlow, tuple[Arrival, Admitted]] = (
            weakref.WeakKeyDictionary())
        # Connections the fast path handed over, with the admission it made.
        self._handovers: weakref.WeakKeyDictionary[connection.Client, Handover] = (
            weakref.WeakKeyDictionary())
        self._protocol_audit: ProtocolErrorAudit | None = None
        self._upstream_ca: str | None = None  # the CA file egress gave mitmproxy
        self._audit_flusher: asyncio.Task[None] | None = None
        self._status_watcher: asyncio.Task[None] | None = None
        deciding = deciding or Deciding.create(lambda: self.runtime)
        self.metrics: Metrics = deciding.metrics
        self.limiter: RateLimiter = deciding.limiter
        self.gate = deciding.gate
        self.recorder = deciding.recorder
        self.connections = ConnectionTracker(self.metrics, self.limiter, self._skills.get)
        # The protocol envelope: egress picks each tunnel's layer; slow or idle connections end.
        self._layers = LayerChooser()
        self.guard = ConnectionGuard(self._connection_settings, self._layers.waiting,
                                     self._closed_by_guard,
                                     lambda: ctx.master.addons.get("proxyserver"))
        self._websockets = WebSocketGuard(lambda: self.runtime.policy if self.runtime else None,
                                          self.gate.credentials, self.recorder)
        # Requests an approval rule covers wait for a person (egress/proxy/approval_hold.py);
        # the admin endpoint (egress serve) is where people decide.
        self.approvals: ApprovalBook = deciding.approvals
        self._hold = ApprovalHold(self.approvals, self.recorder, lambda: self.runtime,
                                  self._known_secrets)
        self._approval_expiry: asyncio.Task[None] | None = None

    # -- options -------------------------------------------------------------------------
    def load(self, loader):  # type: ignore[no-untyped-def]
        header_limit.install()
        install_hostless_log()  # mitmproxy's own 400 for a request without Host gets audited
        websocket.install()  # messages stream (not retained), capped, checked for keys
        connclose.install()  # a connection egress closes is closed, socket and all
        approval_hold.install()  # a request held for approval is buffered whole, capped
        loader.add_option("egress_policies", str, "",
                          "Directory of egress policy YAML files (required).")
        loader.add_option("egress_data_dir", str, "",
                          "egress state directory (tokens, CA, audit.jsonl). "
                          "Default: $EGRESS_DATA_DIR or ~/.local/state/egress.")
        loader.add_option("egress_audit", str, "",
                          "Audit log file, or - for stdout (container log collectors). "
                          "Default: DATA_DIR/audit.jsonl.")

    def configure(self, updated: set[str]) -> None:
        if ctx.options.connection_strategy != "lazy":
            # Nothing may connect upstream before egress has decided (deny before connect).
            ctx.options.update(connection_strategy="lazy")
        if ctx.options.rawtcp:
            # No raw relay on mitmproxy's guess (after a 101, or for bytes that look like no
            # HTTP); egress picks tunnel layers itself and relays raw TCP only where a rule says.
            ctx.options.update(rawtcp=False)
        if self._given:
            # `egress serve` built the runtime and set the options (egress/proxy/master.py);
            # upstream_ca is staged here once, and again on every reload (the settings hook).
            if self.runtime is not None and not self._upstream_hooked:
                self._upstream_hooked = True
                self._take_upstream_ca()
            return
        if self.runtime is not None and not (
                {"egress_policies", "egress_data_dir", "egress_audit"} & updated):
            return
        if not ctx.options.egress_policies:
            # No policy: every request is refused (no_policy). Not an OptionsError, which
            # mitmproxy answers by re-applying the previous (equally empty) value.
            log.error("egress: no policy loaded; set egress_policies=DIR. Refusing everything.")
            return
        data_dir = ctx.options.egress_data_dir or str(default_data_dir())
        preloaded, self._preloaded = self._preloaded, None
        policy = preloaded[1] if preloaded and preloaded[0] == ctx.options.egress_policies else None
        try:
            runtime = Runtime.create(
                ctx.options.egress_policies, data_dir,
                self_addresses=listen_addresses(ctx.options.listen_host, ctx.options.listen_port),
                audit_path=ctx.options.egress_audit or None, policy=policy,
            )
        except PolicyErrors as exc:
            raise OptionsError(f"egress_policies: invalid policy:\n{exc}") from exc
        if self.runtime is not None:
            self.runtime.close(drain=1.0)  # its checkpoint first; the new writer continues
        self.runtime = runtime
        if self._audit_flusher is not None:  # already running: ship from the new one too
            runtime.start_shipping()
        updates: dict[str, object] = {}
        if ctx.options.confdir == "~/.mitmproxy":
            # Intercepted hosts are signed by egress's CA (`egress ca` prints its path).
            ensure_ca(self.runtime.data_dir)
            updates["confdir"] = str(ca_dir(self.runtime.data_dir))
        if updates:
            ctx.options.update(**updates)
        self._take_upstream_ca()

    def _take_upstream_ca(self) -> None:
        """mitmproxy verifies upstream TLS with settings.upstream_ca (a staged copy), now and
        after every reload."""
        assert self.runtime is not None
        try:
            upstream_ca = staged_copy(self.runtime.data_dir,
                                      self.runtime.policy.settings.upstream_ca)
        except ValueError as exc:
            raise OptionsError(f"settings.upstream_ca: {exc}") from exc
        if upstream_ca and ctx.options.ssl_verify_upstream_trusted_ca != upstream_ca:
            self._upstream_ca = upstream_ca
            ctx.options.update(ssl_verify_upstream_trusted_ca=upstream_ca)
        self.runtime.settings_hooks.append(self._upstream_ca_hook)

    def _upstream_ca_hook(self, new: PolicySet) -> Callable[[], None]:
        """On reload: mitmproxy verifies upstream TLS with the new `upstream_ca` (a copy named
        by its content, so an edited file is read again), or refuses the reload."""
        assert self.runtime is not None
        staged = staged_copy(self.runtime.data_dir, new.settings.upstream_ca)  # ValueError

        def commit() -> None:
            if staged is None and self._upstream_ca is None:
                return  # egress never set the option: leave an operator's --set alone
            if ctx.options.ssl_verify_upstream_trusted_ca != staged:
                ctx.options.update(ssl_verify_upstream_trusted_ca=staged)
            self._upstream_ca = staged

        return commit

    def running(self) -> None:
        if self._protocol_audit is None:
            self._protocol_audit = ProtocolErrorAudit(self.recorder, self._describe_peer)
            self._protocol_audit.install()
        if self._audit_flusher is None and not self._given:  # (else `egress serve` runs it)
            # summaries of folded denials, on their interval
            self._audit_flusher = asyncio.get_running_loop().create_task(
                flush_audit_periodically(lambda: self.runtime))
        if self._status_watcher is None:  # secrets' ages for /metrics
            self._status_watcher = asyncio.get_running_loop().create_task(
                watch_secret_status(lambda: self.runtime))
        if self._approval_expiry is None:  # approval_expired lines on time
            self._approval_expiry = asyncio.get_running_loop().create_task(
                self.approvals.run_expiry())
        self.guard.start()
        if self.runtime is not None:
            self.runtime.start_shipping()  # audit lines off the host, in a thread of its own

    def done(self) -> None:
        self.guard.stop()
        if self._approval_expiry is not None:
            self._approval_expiry.cancel()
            self._approval_expiry = None
        if self._protocol_audit is not None:
            self._protocol_audit.uninstall()
            self._protocol_audit = None
        if self._audit_flusher is not None:
            self._audit_flusher.cancel()
            self._audit_flusher = None
        if self._status_watcher is not None:
            self._status_watcher.cancel()
            self._status_watcher = None
        if self.runtime is not None:
            self.runtime.close()  # summaries, a signed checkpoint, what is left to ship

    # -- requests: the gate --------------------------------------------------------------
    async def http_connect(self, flow: http.HTTPFlow) -> None:
        self.guard.head_complete(flow.client_conn)
        if flow.response is not None:
            return  # another addon answered
        try:
            what = arrival(flow, "connect", proxy_authorization=self._pop_auth(flow))
            handover = self._handovers.pop(flow.client_conn, None)
            if handover is not None:  # the fast path decided (egress/proxy/handover.py)
                await self._apply(flow, what, self._handed_over(handover, what),
                                  record=not handover.recorded)
                return
            await self._apply(flow, what, await self.gate.admit(what))
        except Exception:
            self._fail_closed(flow)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        self.guard.head_complete(flow.client_conn)
        if flow.response is not None:
            return
        try:
            if flow.error is not None:  # mitmproxy refuses it (invalid request); audit that once
                self._record_mitmproxy_refusal(flow)
                return
            tunnel = self._tunnels.get(flow.client_conn)
            client = flow.client_conn
            what = arrival(
                flow, "tunnelled" if tunnel else "http", proxy_authorization=self._pop_auth(flow),
                authenticated_as=self._skills.get(client), tunnel=tunnel,
                # A credential goes only into a TLS session egress terminated and whose
                # upstream certificate mitmproxy verifies (ssl_insecure off).
                verified_tls=(tunnel is not None and client.tls_established
                              and not ctx.options.ssl_insecure),
                websocket_enabled=ctx.options.websocket)
            handover = self._handovers.pop(client, None)
            outcome = (self._handed_over(handover, what) if handover is not None
                       else await self.gate.admit(what))
            await self._apply(flow, what, outcome)
        except Exception:
            self._fail_closed(flow)

    def adopt(self, client: connection.Client, handover: Handover) -> None:
        """The fast path hands `client` over; its first request was decided already."""
        self._handovers[client] = handover
        self._skills[client] = handover.admitted.skill

    @staticmethod
    def _handed_over(handover: Handover, what: Arrival) -> Admitted | Refused:
        """The fast path's admission, if mitmproxy read the request as it did."""
        if same_request(handover.arrival, what):
            return handover.admitted
        log.error("egress: the fast path and mitmproxy read a request differently; refusing it")
        admitted = handover.admitted
        return Refused(Reason.BAD_REQUEST, "the fast path and mitmproxy read this request "
                       "differently", admitted.skill, admitted.dest, admitted.request_id,
                       counted=True)

    async def _apply(self, flow: http.HTTPFlow, what: Arrival,
                     outcome: Admitted | Refused, *, record: bool = True) -> None:
        """THE place a gate's answer reaches the wire. `record`: False when the fast path
        recorded the admission already."""
        client = flow.client_conn
        if outcome.skill is not None and what.kind != "tunnelled":
            self._skills[client] = outcome.skill  # authenticated, whatever comes next
            self.guard.authenticated(client)
        if isinstance(outcome, Refused):
            flow.response = response(self.recorder.refused(what, outcome))
            return
        req = flow.request
        resolved = str(outcome.address) if outcome.address is not None else (
            what.tunnel.address if what.tunnel else None)
        if what.kind == "connect":
            req.host = str(outcome.address)  # pin: mitmproxy dials exactly the vetted address
            self._tunnels[client] = Tunnel(outcome.skill, outcome.dest.host, outcome.dest.port,
                                           outcome.decision, resolved)
        else:
            if outcome.address is not None:
                req.data.host = str(outcome.address)  # pin, the Host header untouched
            if outcome.host_header is not None:
                req.headers["Host"] = outcome.host_header
            if outcome.origin_form:
                req.authority = ""  # an absolute-form target naming the CONNECT host
            injected = outcome.credential
            if injected is not None:
                req.headers = http.Headers([(k.encode(), v.encode()) for k, v in injected.fields])
                if injected.target is not None:
                    req.path = injected.target  # the key in the query, or a re-signed query
                self._injected[flow] = injected
            signs_body = injected is not None and injected.sign_body is not None
            self._websockets.admitted(flow, outcome.skill, outcome.dest, tls=what.verified_tls)
            if outcome.approval is not None:  # read whole, held in `request` for a person
                held = self._hold.prepare(flow, what, outcome, resolved)
                if held is not None:
                    flow.response = response(self.recorder.refused(what, held))
                elif signs_body:
                    self._buffered[flow] = (what, outcome)  # signed once approved
                return  # audited when approved and forwarded
            if signs_body:
                req.stream = False  # signed in `request`, once the whole body is here
                self._buffered[flow] = (what, outcome)
            else:
                req.stream = self._request_stream(flow, what, outcome)  # type: ignore[assignment]
        if record:
            self.recorder.allowed(what, outcome, resolved)

    def _request_stream(self, flow: http.HTTPFlow, what: Arrival, admitted: Admitted) -> object:
        """True, or a scanner when the body must not carry credentials bound elsewhere."""
        if not admitted.unbound:
            return True
        dest = admitted.dest
        return request_scanner(flow, admitted.unbound, lambda name: self.recorder.denied(
            Reason.CREDENTIAL_EXFILTRATION, kind="http", skill=admitted.skill, host=dest.host,
            port=dest.port, client=what.peer, request=request_line(flow),
            detail=f"request body carries credential {name}, bound to other hosts; "
                   f"upstream aborted",
            credential=admitted.credential.credential if admitted.credential else None))

    async def request(self, flow: http.HTTPFlow) -> None:
        """A held request's body is complete: a person approves it, or it is refused. Then
        a buffered AWS request is signed."""
        if flow.response is None and self._hold.held(flow):
            try:
                flow.response = await self._hold.hold(flow)
            except Exception:
                self._fail_closed(flow)
                return
        self._sign_buffered(flow)

    def _sign_buffered(self, flow: http.HTTPFlow) -> None:
        """A buffered AWS request: refuse a body carrying a stray key, else sign it."""
        pending = self._buffered.pop(flow, None)
        injected = self._injected.get(flow)
        if pending is None or injected is None or injected.sign_body is None \
                or flow.response is not None:
            return
        what, admitted = pending
        try:
            body = flow.request.raw_content or b""
            found = carried_in_body(body, admitted.unbound) if admitted.unbound else None
            if found is not None:
                flow.response = response(self.recorder.refused(what, Refused(
                    Reason.CREDENTIAL_EXFILTRATION,
                    f"request body carries credential {found}, bound to other hosts",
                    admitted.skill, admitted.dest, admitted.request_id, admitted.decision,
                    counted=True)))
                return
            fields, target = injected.sign_body(body)
            flow.request.headers = http.Headers([(k.encode(), v.encode()) for k, v in fields])
            flow.request.path = target
        except Exception:
            self._fail_closed(flow)

    def _known_secrets(self, skill: str) -> list[str]:
        """Placeholders of the skill's credentials and the real keys fetched for it."""
        policy = self.runtime.policy.skills.get(skill) if self.runtime else None
        out = [c.placeholder for c in policy.credentials.values() if c.placeholder] \
            if policy is not None else []
        return out + [s.reveal() for values in self.gate.credentials.known(skill).values()
                      for s in values]

    @staticmethod
    def _pop_auth(flow: http.HTTPFlow) -> str | None:
        """Proxy-Authorization is read once and never forwarded (mitmproxy would, on plain
        HTTP)."""
        value = flow.request.headers.get("Proxy-Authorization")
        flow.request.headers.pop("Proxy-Authorization", None)
        return value

    def _fail_closed(self, flow: http.HTTPFlow) -> None:
        """A bug in egress must never let a request through: refuse and audit it."""
        log.exception("egress: internal error deciding a request; refusing it")
        flow.response = None
        try:
            skill, dest = self._skills.get(flow.client_conn), requested_destination(flow)
            rid = new_request_id()
            flow.response = response(refusal(Reason.INTERNAL_ERROR, skill=skill, host=dest.host,
                                             port=dest.port, request_id=rid))
            self.recorder.denied(Reason.INTERNAL_ERROR, request_id=rid,
                                 kind="connect" if flow.request.method == "CONNECT" else "http",
                                 skill=skill, host=dest.host, port=dest.port,
                                 client=peer_address(flow.client_conn), detail="internal error",
                                 request=request_line(flow))
        except Exception:
            flow.response = http.Response.make(500, b"egress internal error\n")

    def _record_mitmproxy_refusal(self, flow: http.HTTPFlow) -> None:
        """mitmproxy refused a request it parsed (smuggling-prone headers, a CONNECT inside a
        tunnel): it answers the client itself; egress writes the audit line."""
        assert flow.error is not None
        problem = mitmproxy_refusal(flow.request, flow.error.msg)
        skill, dest = self._who(flow)
        self.recorder.denied(problem.reason, kind="http", skill=skill, host=dest.host,
                             port=dest.port, client=peer_address(flow.client_conn),
                             detail=problem.detail, request=request_line(flow))

    def _who(self, flow: http.HTTPFlow) -> tuple[str | None, Destination]:
        """The skill and the destination a flow was judged for (its tunnel's, if any)."""
        tunnel = self._tunnels.get(flow.client_conn)
        if tunnel is not None:
            return tunnel.skill, Destination(tunnel.host, tunnel.port)
        return self._skills.get(flow.client_conn), requested_destination(flow)

    # -- responses -----------------------------------------------------------------------
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        try:
            if flow.response is None:
                return
            why = switch_refusal(flow.response.status_code, flow.request.method,
                                 list(flow.request.headers.items(multi=True)),
                                 list(flow.response.headers.items(multi=True)),
                                 http2=flow.request.is_http2)
            if why is not None and self.runtime is not None:  # an upstream 101 egress forbids
                self._kill(flow, Reason.UPGRADE_NOT_ALLOWED, why)
                return
            # Every response streams (SSE arrives event by event); one to a request that
            # carried a key streams through the redactor (egress/proxy/bodies.py).
            injected = self._injected.get(flow)
            if injected is not None and injected.refused is not None \
                    and flow.response.status_code == 401:
                injected.refused()  # a minted token the upstream no longer takes
            refused = install_response_guard(flow, injected.echoes if injected else ())
            if refused is not None:
                self._kill(flow, Reason.RESPONSE_UNREADABLE, refused,
                           credential=injected.credential if injected else None)
        except Exception:
            log.exception("egress: error handling response headers; dropping the response")
            flow.kill()

    def _kill(self, flow: http.HTTPFlow, reason: Reason, detail: str,
              credential: str | None = None) -> None:
        """A flow refused after it started: nothing to reply any more; killed and audited."""
        flow.kill()
        skill, dest = self._who(flow)
        self.recorder.denied(reason, kind="http", skill=skill, host=dest.host, port=dest.port,
                             client=peer_address(flow.client_conn), detail=detail,
                             request=request_line(flow), credential=credential)

    def response(self, flow: http.HTTPFlow) -> None:
        self.guard.exchange_done(flow.client_conn, upgraded=flow.websocket is not None,
                                 http2=flow.request.is_http2)

    def error(self, flow: http.HTTPFlow) -> None:
        self._hold.error(flow)  # a held body over the cap (audited), or the client left
        self.guard.exchange_done(flow.client_conn, upgraded=False, http2=flow.request.is_http2)

    # -- WebSocket -----------------------------------------------------------------------
    def websocket_start(self, flow: http.HTTPFlow) -> None:
        self._websockets.start(flow)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        try:
            self._websockets.message(flow)  # client messages: size cap, no stray keys
            injected = self._injected.get(flow)  # upstream messages: no echo of the key
            self._websockets.redact_echo(flow, injected.echoes if injected else ())
        except Exception:  # a bug must not let a message through: drop it, close, audit
            log.exception("egress: error checking a WebSocket message; closing the connection")
            WebSocketGuard.fail_closed(flow)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        self._websockets.end(flow)  # audits a connection egress closed

    # -- connections and tunnels ---------------------------------------------------------
    def client_connected(self, client: connection.Client) -> None:
        if (refused := self.guard.connected(
                client, authenticated=client in self._handovers)) is not None:
            client.error = f"egress: {refused}"  # mitmproxy closes it before reading a byte
            self.recorder.denied(refused, kind="connection", skill=None, host="", port=0,
                                 client=peer_address(client),
                                 detail="too many unauthenticated connections from this address")
        self.connections.connected(client)

    def client_disconnected(self, client: connection.Client) -> None:
        self.guard.disconnected(client)
        self.connections.disconnected(client)  # gives its rate-limit slots back

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        """egress chooses the layer of every approved tunnel (egress/proxy/layers.py)."""
        client = nextlayer.context.client
        tunnel = self._tunnels.get(client)
        try:
            chosen = self._layers.choose(nextlayer, tunnel)
        except Exception:
            log.exception("egress: error choosing a tunnel's layer; refusing the tunnel")
            chosen = Refusal(Reason.INTERNAL_ERROR, "tunnel", "internal error") if tunnel else None
        if chosen == "wait":
            nextlayer.layer = None  # mitmproxy asks again when more bytes arrive
            raise AddonHalt  # under mitmdump NextLayer runs after us: it must not guess
        if isinstance(chosen, Refusal):
            assert tunnel is not None
            self._refuse_tunnel(client, tunnel, chosen)
            nextlayer.layer = ClosingLayer(nextlayer.context)
        elif chosen is not None:
            nextlayer.layer = chosen
            self.guard.layer_chosen(client, self._layers.kind(chosen, client))
        self.connections.next_layer(nextlayer)  # counts the connection's bytes

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        tunnel = self._tunnels.get(data.context.client)
        try:
            # Passthrough (TLS end to end, no extra CA) unless a rule must look inside.
            data.ignore_connection = tunnel is None or not tunnel.decision.intercept
            if tunnel is None:
                return  # no CONNECT was approved on this connection: server_connect refuses it
            sni = data.client_hello.sni
            if not sni_matches(tunnel, sni):
                data.ignore_connection = True  # never terminate TLS for a refused tunnel
                self._refuse_tunnel(data.context.client, tunnel, Refusal(
                    Reason.HOST_MISMATCH, "tls",
                    f"TLS SNI {sni!r} differs from CONNECT host" if sni else "no TLS SNI"))
            elif tunnel.decision.intercept:
                # Connect upstream (to the vetted address) before answering the client, so the
                # client is offered the upstream's protocol (ALPN): an HTTP/1.1 upstream is not
                # re-framed into HTTP/2 by the proxy (measured: 35% faster).
                data.establish_server_tls_first = True
        except Exception:
            log.exception("egress: error checking a TLS ClientHello; refusing the tunnel")
            data.ignore_connection = True
            if tunnel is not None:
                tunnel.refused = Reason.INTERNAL_ERROR

    def tls_failed_server(self, data: tls.TlsData) -> None:
        """Upstream TLS (egress verifies it on intercepted hosts) failed: one denial line, not
        an allow. A request in flight gets mitmproxy's 502; later ones egress's 502."""
        client = data.context.client
        tunnel = self._tunnels.get(client)
        detail = f"upstream TLS failed: {str(data.conn.error or '')[:100]}"
        if tunnel is not None:
            if tunnel.refused is None:
                self._refuse_tunnel(client, tunnel, Refusal(Reason.UPSTREAM_TLS_FAILED, "tls",
                                                            detail))
            return
        address = getattr(data.conn, "address", None)  # `GET https://...` as plain HTTP
        self.recorder.denied(Reason.UPSTREAM_TLS_FAILED, kind="tls",
                             skill=self._skills.get(client), host=str(data.conn.sni or ""),
                             port=int(address[1]) if address else 0,
                             client=peer_address(client), detail=detail)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        """The vetted upstream could not be reached: a denial line, so an allowed request or
        tunnel that got nowhere is not left as an `allow` alone."""
        error = str(data.server.error or "")
        if error.startswith("egress:"):
            return  # refused in server_connect: audited there, or the tunnel already was
        try:
            client = data.client
            tunnel = self._tunnels.get(client)
            address = data.server.address
            ip, port = (str(address[0]), int(address[1])) if address else ("", 0)
            self.recorder.denied(
                Reason.UPSTREAM_UNREACHABLE, kind="connect" if tunnel else "http",
                skill=tunnel.skill if tunnel else self._skills.get(client),
                host=tunnel.host if tunnel else ip, port=tunnel.port if tunnel else port,
                client=peer_address(client), detail=f"cannot connect to {ip}: {error[:100]}")
        except Exception:
            log.exception("egress: error auditing an upstream connection failure")

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """Last line: never dial an address netguard did not vet, nor a refused tunnel."""
        try:
            tunnel = self._tunnels.get(data.client)
            if self.runtime is None:
                data.server.error = "egress: not configured"
            elif tunnel is not None and tunnel.refused is not None:
                data.server.error = f"egress: tunnel refused ({tunnel.refused})"
            elif not self._vetted(data.server.address):
                data.server.error = "egress: destination address was not vetted"
                address = data.server.address
                self.recorder.denied(
                    Reason.BLOCKED_ADDRESS, kind="connect",
                    skill=tunnel.skill if tunnel else self._skills.get(data.client),
                    host=str(address[0]) if address else "",
                    port=int(address[1]) if address else 0, client=peer_address(data.client),
                    detail="upstream connection to an address that was not vetted")
        except Exception:
            log.exception("egress: error vetting an upstream connection; refusing it")
            data.server.error = "egress: internal error"

    def _vetted(self, address: tuple[str, int] | None) -> bool:
        assert self.runtime is not None
        try:
            ip = parse_ip_literal(address[0]) if address else None
        except ValueError:
            return False  # not an address at all: certainly not a vetted one
        return ip is not None and address is not None and self.runtime.guard.was_vetted(
            ip, address[1])

    def _refuse_tunnel(self, client: connection.Client, tunnel: Tunnel, refusal: Refusal) -> None:
        tunnel.refused = refusal.reason  # server_connect refuses any dial for it from now on
        tunnel.refused_id = new_request_id()
        self.recorder.denied(refusal.reason, kind=refusal.kind, skill=tunnel.skill,
                             host=tunnel.host, port=tunnel.port, client=peer_address(client),
                             detail=refusal.detail, request_id=tunnel.refused_id)

    def _closed_by_guard(self, client: connection.Client, reason: Reason, detail: str) -> None:
        tunnel = self._tunnels.get(client)
        self.recorder.denied(reason, kind="connection", skill=self._skills.get(client),
                             host=tunnel.host if tunnel else "", port=tunnel.port if tunnel else 0,
                             client=peer_address(client), detail=detail)

    def _describe_peer(self, peername: object) -> tuple[str | None, str, int] | None:
        """(skill, tunnel host, port) of the open connection from `peername`, if known."""
        client = self.guard.client_at(peername)
        if client is None:
            return None
        tunnel = self._tunnels.get(client)
        skill = tunnel.skill if tunnel else self._skills.get(client)
        return (skill, tunnel.host, tunnel.port) if tunnel else (skill, "", 0)

    def _connection_settings(self) -> ConnectionSettings:
        return self.runtime.policy.settings.connections if self.runtime else ConnectionSettings()

    def oauth_grants(self) -> dict[str, int]:
        """OAuth access tokens minted so far, by grant type, for /metrics."""
        return dict(self.gate.credentials.minter.grants)

    def open_connections(self) -> dict[str, int]:
        """Open client connections by skill ("" = not authenticated yet), for /metrics."""
        return self.connections.open_by_skill()
