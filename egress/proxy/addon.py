"""EgressAddon: mitmproxy hooks translated into egress decisions.

Each hook reads the flow, asks egress (identity, decide, netguard), and applies the answer: a
refusal response, passthrough or interception, a pinned address. The order of checks is the
order of cost: credentials, then the pure policy decision, then DNS -- so a denied request
costs no lookup and no upstream connection.

    client connects    client_connected cap on unauthenticated connections, timeouts start
    CONNECT host:port  http_connect     auth, decide, rate limit, vet address, pin, Tunnel
    tunnel bytes       next_layer       egress chooses the layer (egress/layers.py): complete
                                        ClientHello with SNI == CONNECT host -> passthrough or
                                        intercept; HTTP/1 request line -> HTTP; else refused
                       tls_clienthello  SNI check again; intercept if a rule looks inside
    request in tunnel  requestheaders   Host == CONNECT host, upgrades, method/path, credential
    response           responseheaders  stream; redact the key where egress injected one
    WebSocket message  websocket_message  redact the key in upstream messages
    GET http://h/p     requestheaders   auth, Host == URI, decide, upgrades, credential, vet, pin
    101 response       responseheaders  only for the WebSocket handshake egress let through
    upstream dial      server_connect   last line: only vetted addresses, never refused tunnels
    upstream TLS fails tls_failed_server  audited as upstream_tls_failed
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import weakref

from mitmproxy import connection, ctx, http, tls
from mitmproxy.exceptions import AddonHalt, OptionsError
from mitmproxy.net.http import url
from mitmproxy.proxy import layer, server_hooks

from egress.audit import AuditRecord, new_request_id
from egress.credentials.broker import Brokerage, Injected, Refused, redact
from egress.errors import PolicyErrors
from egress.identity import parse_proxy_authorization
from egress.netguard import Blocked, Vetted
from egress.ops.datadir import default_data_dir
from egress.ops.metrics import Metrics
from egress.ops.ratelimit import RateLimiter
from egress.ops.runtime import Runtime, flush_audit_periodically
from egress.policy.decide import Decision, Destination, Verdict, decide
from egress.policy.hosts import is_host_name, listen_addresses, normalise_host, parse_ip_literal
from egress.policy.model import ConnectionSettings, Mode, PolicySet
from egress.proxy import connclose, header_limit, websocket
from egress.proxy.bodies import (
    redact_message,
    request_scanner,
    response_redactor,
    unreadable_encoding,
)
from egress.proxy.ca import ca_dir, ensure_ca
from egress.proxy.connections import ConnectionTracker
from egress.proxy.connguard import ConnectionGuard
from egress.proxy.flows import (
    audit_record,
    peer_address,
    requested_destination,
)
from egress.proxy.layers import ClosingLayer, LayerChooser, Refusal
from egress.proxy.protocol_audit import ProtocolErrorAudit, install_hostless_log
from egress.proxy.requestcheck import (
    check_head,
    header_problem,
    judged_path,
    method_problem,
    read_head,
)
from egress.proxy.tunnels import Tunnel, sni_matches
from egress.proxy.upgrades import request_refusal, switch_refusal
from egress.proxy.websocket import WebSocketGuard
from egress.reasons import Reason
from egress.responses import refusal
from egress.secrets import Secret

__all__ = ["EgressAddon"]

log = logging.getLogger("egress")


class EgressAddon:
    def __init__(self, runtime: Runtime | None = None, *,
                 preloaded: tuple[str, PolicySet] | None = None) -> None:
        self.runtime = runtime
        # (directory, its policy) already loaded by `egress serve`, used by the first configure.
        self._preloaded = preloaded
        self._tunnels: weakref.WeakKeyDictionary[connection.Client, Tunnel] = (
            weakref.WeakKeyDictionary()
        )
        self._skills: weakref.WeakKeyDictionary[connection.Client, str] = (
            weakref.WeakKeyDictionary()
        )
        self._brokerage = Brokerage()
        self._protocol_audit: ProtocolErrorAudit | None = None
        self._audit_flusher: asyncio.Task[None] | None = None
        # Secrets injected into a flow, kept to redact echoes in its response headers.
        self._injected: weakref.WeakKeyDictionary[http.HTTPFlow, Secret] = (
            weakref.WeakKeyDictionary()
        )
        # Operations: metrics, rate limits, open connections and their bytes (per process).
        self.metrics = Metrics()
        self.limiter = RateLimiter()
        self.connections = ConnectionTracker(self.metrics, self.limiter, self._skills.get)
        # The protocol envelope: egress picks each tunnel's layer; slow or idle connections end.
        self._layers = LayerChooser()
        self.guard = ConnectionGuard(self._connection_settings, self._layers.waiting,
                                     self._closed_by_guard,
                                     lambda: ctx.master.addons.get("proxyserver"))
        self._websockets = WebSocketGuard(lambda: self.runtime, self._brokerage.known,
                                          self.metrics)

    # -- options -------------------------------------------------------------------------
    def load(self, loader):  # type: ignore[no-untyped-def]
        header_limit.install()
        install_hostless_log()  # mitmproxy's own 400 for a request without Host gets audited
        websocket.install()  # messages stream (not retained), capped, checked for keys
        connclose.install()  # a connection egress closes is closed, socket and all
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
            self.runtime = Runtime.create(
                ctx.options.egress_policies, data_dir,
                self_addresses=listen_addresses(ctx.options.listen_host, ctx.options.listen_port),
                audit_path=ctx.options.egress_audit or None, policy=policy,
            )
        except PolicyErrors as exc:
            raise OptionsError(f"egress_policies: invalid policy:\n{exc}") from exc
        self._configure_tls(self.runtime)

    def _configure_tls(self, runtime: Runtime) -> None:
        updates: dict[str, object] = {}
        if ctx.options.confdir == "~/.mitmproxy":
            # Intercepted hosts are signed by egress's CA (`egress ca` prints its path).
            ensure_ca(runtime.data_dir)
            updates["confdir"] = str(ca_dir(runtime.data_dir))
        upstream_ca = runtime.policy.settings.upstream_ca
        if upstream_ca and ctx.options.ssl_verify_upstream_trusted_ca != upstream_ca:
            updates["ssl_verify_upstream_trusted_ca"] = upstream_ca
        if updates:
            ctx.options.update(**updates)

    def running(self) -> None:
        if self._protocol_audit is None and self.runtime is not None:
            runtime = self.runtime
            self._protocol_audit = ProtocolErrorAudit(lambda r: runtime.record(r),
                                                      lambda: runtime.policy.digest,
                                                      self._describe_peer)
            self._protocol_audit.install()
        if self._audit_flusher is None:  # summaries of folded denials, on their interval
            self._audit_flusher = asyncio.get_running_loop().create_task(
                flush_audit_periodically(lambda: self.runtime))
        self.guard.start()

    def done(self) -> None:
        self.guard.stop()
        if self._protocol_audit is not None:
            self._protocol_audit.uninstall()
            self._protocol_audit = None
        if self._audit_flusher is not None:
            self._audit_flusher.cancel()
            self._audit_flusher = None
        if self.runtime is not None:
            self.runtime.flush_audit(final=True)

    # -- hooks ---------------------------------------------------------------------------
    async def http_connect(self, flow: http.HTTPFlow) -> None:
        self.guard.head_complete(flow.client_conn)
        started = time.perf_counter()
        try:
            await self._on_connect(flow)
        except Exception:
            self._fail_closed(flow, "connect")
        self.metrics.observe_latency("connect", time.perf_counter() - started)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        self.guard.head_complete(flow.client_conn)
        started = time.perf_counter()
        try:
            await self._on_request(flow)
        except Exception:
            self._fail_closed(flow, "http")
        self.metrics.observe_latency("http", time.perf_counter() - started)

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        try:
            self._on_clienthello(data)
        except Exception:
            log.exception("egress: error checking a TLS ClientHello; refusing the tunnel")
            data.ignore_connection = True
            tunnel = self._tunnels.get(data.context.client)
            if tunnel is not None:
                tunnel.refused = Reason.INTERNAL_ERROR

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        try:
            self._on_server_connect(data)
        except Exception:
            log.exception("egress: error vetting an upstream connection; refusing it")
            data.server.error = "egress: internal error"

    def client_connected(self, client: connection.Client) -> None:
        if (refused := self.guard.connected(client)) is not None:
            client.error = f"egress: {refused}"  # mitmproxy closes it before reading a byte
            if self.runtime is not None:
                self._refuse_connection(client, refused, "connection", None, "", 0,
                                        "too many unauthenticated connections from this address")
        self.connections.connected(client)

    def client_disconnected(self, client: connection.Client) -> None:
        self.guard.disconnected(client)
        self.connections.disconnected(client)  # gives its rate-limit slots back

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        """egress chooses the layer of every approved tunnel (egress/layers.py)."""
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

    def response(self, flow: http.HTTPFlow) -> None:
        self.guard.exchange_done(flow.client_conn, upgraded=flow.websocket is not None,
                                 http2=flow.request.is_http2)

    def error(self, flow: http.HTTPFlow) -> None:
        self.guard.exchange_done(flow.client_conn, upgraded=False, http2=flow.request.is_http2)

    def tls_failed_server(self, data: tls.TlsData) -> None:
        """Upstream TLS (egress verifies it on intercepted hosts) failed: one denial line, not
        an allow. A request in flight gets mitmproxy's 502; later ones egress's 502."""
        client = data.context.client
        tunnel = self._tunnels.get(client)
        if self.runtime is None or (tunnel is not None and tunnel.refused is not None):
            return
        skill: str | None
        if tunnel is not None:
            tunnel.refused = Reason.UPSTREAM_TLS_FAILED
            skill, host, port = tunnel.skill, tunnel.host, tunnel.port
        else:  # `GET https://...` sent to the proxy as plain HTTP
            address = getattr(data.conn, "address", None)
            skill, host, port = (self._skills.get(client), str(data.conn.sni or ""),
                                 int(address[1]) if address else 0)
        self._refuse_connection(client, Reason.UPSTREAM_TLS_FAILED, "tls", skill, host, port,
                                f"upstream TLS failed: {str(data.conn.error or '')[:100]}")

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

    def _closed_by_guard(self, client: connection.Client, reason: Reason, detail: str) -> None:
        tunnel = self._tunnels.get(client)
        if self.runtime is not None:
            self._refuse_connection(client, reason, "connection", self._skills.get(client),
                                    tunnel.host if tunnel else "", tunnel.port if tunnel else 0,
                                    detail)

    def _refuse_tunnel(self, client: connection.Client, tunnel: Tunnel, refusal: Refusal) -> None:
        tunnel.refused = refusal.reason  # server_connect refuses any dial for it from now on
        if self.runtime is not None:
            self._refuse_connection(client, refusal.reason, refusal.kind, tunnel.skill,
                                    tunnel.host, tunnel.port, refusal.detail)

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        self._websockets.start(flow)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        try:
            self._websockets.message(flow)  # client messages: size cap, no stray keys
            self._redact_upstream_message(flow)  # upstream messages: no echo of the key
        except Exception:  # a bug must not let a message through: drop it, close, audit
            log.exception("egress: error checking a WebSocket message; closing the connection")
            WebSocketGuard.fail_closed(flow)

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        self._websockets.end(flow)  # audits a connection egress closed

    def open_connections(self) -> dict[str, int]:
        """Open client connections by skill ("" = not authenticated yet), for /metrics."""
        return self.connections.open_by_skill()

    def _fail_closed(self, flow: http.HTTPFlow, kind: str) -> None:
        """A bug in egress must never let a request through: refuse and audit it."""
        log.exception("egress: internal error deciding a request; refusing it")
        flow.response = None
        try:
            self._refuse(flow, Reason.INTERNAL_ERROR, self._skills.get(flow.client_conn),
                         requested_destination(flow), kind, new_request_id())
        except Exception:
            flow.response = http.Response.make(500, b"egress internal error\n")

    # -- hook bodies -----------------------------------------------------------------------
    async def _on_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or self._no_policy(flow):
            return
        rid = new_request_id()
        admitted = self._admit(flow, "connect", rid)
        if admitted is None:
            return
        skill, dest, decision = admitted
        vetted = await self._vet(flow, skill, dest, "connect", rid, decision)
        if vetted is None:
            return
        flow.request.host = str(vetted.ip)  # pin: mitmproxy dials exactly the vetted address
        self._tunnels[flow.client_conn] = Tunnel(skill, dest.host, dest.port, decision,
                                                 str(vetted.ip))
        self._audit_allowed(flow, skill, dest, "connect", rid, decision, str(vetted.ip))

    def _on_clienthello(self, data: tls.ClientHelloData) -> None:
        tunnel = self._tunnels.get(data.context.client)
        # Passthrough (TLS end to end, no extra CA) unless a rule must look inside requests.
        data.ignore_connection = tunnel is None or not tunnel.decision.intercept
        if tunnel is None:
            data.ignore_connection = True
            return  # no CONNECT was approved on this connection: server_connect refuses it
        sni = data.client_hello.sni
        if sni_matches(tunnel, sni):
            if tunnel.decision.intercept:
                # Connect upstream (to the vetted address) before answering the client, so
                # the client is offered the upstream's protocol (ALPN): an HTTP/1.1 upstream
                # then is not re-framed into HTTP/2 by the proxy (measured: 35% faster).
                data.establish_server_tls_first = True
            return
        data.ignore_connection = True  # never terminate TLS for a refused tunnel
        tunnel.refused = Reason.HOST_MISMATCH
        self._refuse_connection(
            data.context.client, Reason.HOST_MISMATCH, "tls", tunnel.skill, tunnel.host,
            tunnel.port, f"TLS SNI {sni!r} differs from CONNECT host" if sni else "no TLS SNI")

    async def _on_request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or self._no_policy(flow):
            return
        assert self.runtime is not None
        tunnel = self._tunnels.get(flow.client_conn)
        if flow.error is not None:  # mitmproxy refuses it (invalid request); audit that once
            self._audit_mitmproxy_refusal(flow, tunnel)
            return
        if tunnel is not None:
            await self._tunnel_request(flow, tunnel)
            return
        # Plain HTTP. mitmproxy has already turned an absolute-form URI into host/port (and
        # taken an origin-form request's destination from its Host header).
        rid = new_request_id()
        admitted = self._admit(flow, "http", rid)
        if admitted is None:
            return
        skill, dest, decision = admitted
        if self._refuse_protocol_switch(flow, skill, dest, rid, decision):
            return
        # Plain HTTP never carries a credential: a key bound here needs TLS, one bound
        # elsewhere is exfiltration. Checked before DNS: it needs no address.
        if not await self._broker_credentials(flow, skill, dest, rid, decision, tls=False):
            return
        vetted = await self._vet(flow, skill, dest, "http", rid, decision)
        if vetted is None:
            return
        flow.request.data.host = str(vetted.ip)  # pin without touching the Host header
        flow.request.stream = self._request_stream(flow, skill, dest, decision)  # type: ignore[assignment]
        self._websockets.admitted(flow, skill, dest, tls=False)
        self._audit_allowed(flow, skill, dest, "http", rid, decision, str(vetted.ip))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        try:
            if flow.response is None:
                return
            if self._refuse_switch_response(flow):
                return
            # Stream every response (SSE arrives event by event); one to a request that
            # carried a key streams through the redactor (egress/body_guard.py).
            flow.response.stream = True
            secret = self._injected.get(flow)
            if secret is not None:
                fields = [(k, v) for k, v in flow.response.headers.items(multi=True)]
                cleaned = redact(fields, secret.reveal())
                if cleaned is not None:
                    flow.response.headers = http.Headers(
                        [(k.encode(), v.encode()) for k, v in cleaned])
                encoding = unreadable_encoding(flow.response, flow.request.method)
                if encoding is not None:
                    tunnel = self._tunnels.get(flow.client_conn)  # keys only go into tunnels
                    self._refuse_midway(
                        flow, Reason.RESPONSE_UNREADABLE, f"response Content-Encoding {encoding!r}",
                        tunnel.skill if tunnel else None,
                        Destination(tunnel.host, tunnel.port) if tunnel else requested_destination(flow))
                    flow.kill()
                    return
                flow.response.stream = response_redactor(secret.reveal())
        except Exception:
            log.exception("egress: error handling response headers; dropping the response")
            flow.kill()

    def _redact_upstream_message(self, flow: http.HTTPFlow) -> None:
        """Redact the key in messages from an upstream egress gave it to (an echo)."""
        secret = self._injected.get(flow)
        if secret is None or flow.websocket is None or not flow.websocket.messages:
            return
        message = flow.websocket.messages[-1]
        if not message.from_client:
            cleaned = redact_message(message.content, secret.reveal())
            if cleaned is not None:
                message.content = cleaned

    def _refuse_midway(self, flow: http.HTTPFlow, reason: Reason, detail: str,
                       skill: str | None, dest: Destination) -> None:
        """Audit a flow refused after it started (a body, a response): there is no reply to
        send any more; the caller kills or aborts it."""
        assert self.runtime is not None
        self.metrics.decision("deny", reason, skill, dest.host)
        self.runtime.record(audit_record(
            self.runtime.policy.digest, flow, "deny", reason, skill, dest, "http",
            new_request_id(), None, detail=detail,
            credential=flow.metadata.get("egress_credential")))

    def _request_stream(self, flow: http.HTTPFlow, skill: str, dest: Destination,
                        decision: Decision) -> object:
        """`flow.request.stream`: True, or a scanner when the skill holds credentials not bound
        to this destination (the body must not carry them; egress/body_guard.py)."""
        assert self.runtime is not None
        policy = self.runtime.policy.skills.get(skill)
        if policy is None or not policy.credentials:
            return True
        wanted = decision.rule.credential if decision.rule is not None else None
        needles = self._brokerage.unbound(policy, dest, wanted)
        if not needles:
            return True
        return request_scanner(flow, needles, lambda name: self._refuse_midway(
            flow, Reason.CREDENTIAL_EXFILTRATION,
            f"request body carries credential {name}, bound to other hosts; upstream aborted",
            skill, Destination(dest.host, dest.port)))

    def _on_server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """Last line: never dial an address netguard did not vet, nor a refused tunnel."""
        if self.runtime is None:
            data.server.error = "egress: not configured"
            return
        tunnel = self._tunnels.get(data.client)
        if tunnel is not None and tunnel.refused is not None:
            data.server.error = f"egress: tunnel refused ({tunnel.refused})"
            return
        address = data.server.address
        try:
            ip = parse_ip_literal(address[0]) if address else None
        except ValueError:
            ip = None  # not an address at all: certainly not a vetted one
        if ip is None or address is None or not self.runtime.guard.was_vetted(ip, address[1]):
            data.server.error = "egress: destination address was not vetted"
            self._refuse_connection(
                data.client, Reason.BLOCKED_ADDRESS, "connect",
                tunnel.skill if tunnel else self._skills.get(data.client),
                str(address[0]) if address else "", int(address[1]) if address else 0,
                "upstream connection to an address that was not vetted")

    # -- steps ---------------------------------------------------------------------------
    def _refuse_protocol_switch(self, flow: http.HTTPFlow, skill: str, dest: Destination,
                                rid: str, decision: Decision | None = None) -> bool:
        """Refuse Upgrade other than WebSocket, and CONNECT-style methods (egress/upgrades.py)."""
        req = flow.request
        refused = request_refusal(req.method, list(req.headers.items(multi=True)),
                                  http2=req.is_http2, websocket_enabled=ctx.options.websocket)
        if refused is not None:
            self._refuse(flow, refused[0], skill, dest, "http", rid, decision, detail=refused[1])
        return refused is not None

    def _refuse_switch_response(self, flow: http.HTTPFlow) -> bool:
        """An upstream 101 egress did not allow (h2c, ...): kill the flow, audit it."""
        assert flow.response is not None
        why = switch_refusal(flow.response.status_code, flow.request.method,
                             list(flow.request.headers.items(multi=True)),
                             list(flow.response.headers.items(multi=True)),
                             http2=flow.request.is_http2)
        if why is None or self.runtime is None:
            return False
        flow.kill()
        tunnel = self._tunnels.get(flow.client_conn)
        skill = tunnel.skill if tunnel else self._skills.get(flow.client_conn)
        dest = Destination(tunnel.host, tunnel.port) if tunnel else requested_destination(flow)
        self.metrics.decision("deny", Reason.UPGRADE_NOT_ALLOWED, skill, dest.host)
        self.runtime.record(audit_record(self.runtime.policy.digest, flow, "deny",
                                         Reason.UPGRADE_NOT_ALLOWED, skill, dest, "http",
                                         new_request_id(), None, detail=why))
        return True

    def _audit_mitmproxy_refusal(self, flow: http.HTTPFlow, tunnel: Tunnel | None) -> None:
        """mitmproxy refused a request it parsed (check_invalid: smuggling-prone headers, a
        CONNECT inside a tunnel): it answers the client itself; egress writes the audit line."""
        assert self.runtime is not None and flow.error is not None
        nested = flow.request.method.upper().startswith("CONNECT")
        reason = Reason.NESTED_CONNECT if nested else Reason.BAD_REQUEST
        what = "".join(c for c in flow.error.msg.split(":", 1)[0][:80] if c.isprintable())
        if not nested:  # name the bytes egress refuses itself (bad_header, ...) where it can
            head = read_head(flow.request)
            problem = method_problem(head.method) or header_problem(head.fields)
            if problem is not None:
                reason, what = problem.reason, problem.detail or what
        skill = tunnel.skill if tunnel else self._skills.get(flow.client_conn)
        dest = Destination(tunnel.host, tunnel.port) if tunnel else requested_destination(flow)
        self.metrics.decision("deny", reason, skill, dest.host)
        self.runtime.record(audit_record(self.runtime.policy.digest, flow, "deny", reason, skill,
                                         dest, "http", new_request_id(), None,
                                         detail=f"mitmproxy refused the request: {what}"))

    def _no_policy(self, flow: http.HTTPFlow) -> bool:
        """Without a loaded policy there is nothing to allow: refuse (and there is no data dir
        to audit to, so the process log says it)."""
        if self.runtime is not None:
            return False
        reply = refusal(Reason.NO_POLICY, skill=None, host=flow.request.pretty_host,
                        port=flow.request.port, request_id=new_request_id())
        flow.response = http.Response.make(reply.status, reply.body, dict(reply.headers))
        self.metrics.decision("deny", Reason.NO_POLICY, None, None)
        log.error("egress: refused %s:%d: no policy loaded", flow.request.pretty_host,
                  flow.request.port)
        return True

    async def _tunnel_request(self, flow: http.HTTPFlow, tunnel: Tunnel) -> Decision | None:
        """A request inside an approved tunnel that mitmproxy parsed (plain HTTP or intercepted)."""
        assert self.runtime is not None
        flow.request.headers.pop("Proxy-Authorization", None)
        rid = new_request_id()
        head = read_head(flow.request)
        problem = check_head(head, tunnel.host, tunnel.port, require_host=True)
        if problem is not None:
            self._refuse(flow, problem.reason, tunnel.skill, Destination(tunnel.host, tunnel.port),
                         "http", rid, detail=problem.detail)
            return None
        if head.authority and not head.http2:
            # An absolute-form target naming the CONNECT host: forward it in origin-form.
            flow.request.authority = ""
        dest = Destination(tunnel.host, tunnel.port, head.method,
                           judged_path(flow.request.path))
        if self._refuse_protocol_switch(flow, tunnel.skill, dest, rid):
            return None
        decision = self._judge(flow, tunnel.skill, dest, "http", rid)
        if decision is None:
            return None
        # A credential goes only into a TLS session egress terminated and whose upstream
        # certificate mitmproxy verifies (ssl_insecure off): never into a plain tunnel.
        tls = flow.client_conn.tls_established and not ctx.options.ssl_insecure
        if not await self._broker_credentials(flow, tunnel.skill, dest, rid, decision, tls=tls):
            return None
        if tunnel.refused is not None:  # its upstream failed TLS verification (audited then)
            reply = refusal(tunnel.refused, skill=tunnel.skill, host=tunnel.host,
                            port=tunnel.port, request_id=rid)
            flow.response = http.Response.make(reply.status, reply.body, dict(reply.headers))
            return None
        flow.request.stream = self._request_stream(flow, tunnel.skill, dest, decision)  # type: ignore[assignment]
        self._websockets.admitted(flow, tunnel.skill, dest, tls=tls)
        if flow.metadata.get("egress_credential") is None:
            self._audit_allowed(flow, tunnel.skill, dest, "http", rid, decision, tunnel.address or "")
        else:
            self.metrics.decision(decision.verdict, decision.reason, tunnel.skill, dest.host)
        return decision

    async def _broker_credentials(self, flow: http.HTTPFlow, skill: str, dest: Destination,
                                  rid: str, decision: Decision, *, tls: bool) -> bool:
        """Refuse stray credentials, inject the rule's one. False: the flow was refused."""
        assert self.runtime is not None
        skill_policy = self.runtime.policy.skills.get(skill)
        if skill_policy is None or not skill_policy.credentials:
            return True
        fields = [(k, v) for k, v in flow.request.headers.items(multi=True)]
        outcome = await self._brokerage.prepare(
            self.runtime.secrets, skill_policy, decision.rule, dest, fields,
            flow.request.path, verified_tls=tls)
        if isinstance(outcome, Refused):
            self._refuse(flow, outcome.reason, skill, dest, "http", rid, decision,
                         detail=outcome.detail)
            return False
        if isinstance(outcome, Injected):
            flow.request.headers = http.Headers(
                [(k.encode(), v.encode()) for k, v in outcome.fields])
            self._injected[flow] = outcome.secret
            flow.metadata["egress_credential"] = outcome.credential
            if outcome.stale or self.runtime.policy.settings.audit.log_allowed:
                # A stale key (secret manager down, inside the grace window) is always audited.
                self.runtime.record(audit_record(
                    self.runtime.policy.digest, flow, str(decision.verdict), decision.reason,
                    skill, dest, "http", rid, decision, credential=outcome.credential,
                    detail="stale credential: secret manager unavailable" if outcome.stale else None))
        return True

    def _admit(self, flow: http.HTTPFlow, kind: str, rid: str
               ) -> tuple[str, Destination, Decision] | None:
        """Who asks, for what, and may they: the steps shared by CONNECT and plain HTTP.
        None: the flow was refused (and audited)."""
        skill = self._authenticate(flow, kind, rid)
        if skill is None:
            return None
        dest = self._destination(flow, skill, kind, rid)
        if dest is None:
            return None
        decision = self._judge(flow, skill, dest, kind, rid)
        return None if decision is None else (skill, dest, decision)

    def _judge(self, flow: http.HTTPFlow, skill: str, dest: Destination, kind: str,
               rid: str) -> Decision | None:
        """The policy decision, then rate limits. None: the flow was refused (and audited)."""
        assert self.runtime is not None
        decision = decide(self.runtime.policy, skill, dest)
        if not decision.allowed:
            self._refuse(flow, decision.reason, skill, dest, kind, rid, decision,
                         detail=decision.detail)
            return None
        return self._limit(flow, skill, dest, kind, rid, decision)

    def _authenticate(self, flow: http.HTTPFlow, kind: str, rid: str) -> str | None:
        assert self.runtime is not None
        header = flow.request.headers.get("Proxy-Authorization")
        flow.request.headers.pop("Proxy-Authorization", None)
        if header is None and flow.client_conn in self._skills:
            return self._skills[flow.client_conn]  # plain-HTTP keep-alive, authenticated before
        creds = parse_proxy_authorization(header)
        if creds is None:
            reason = Reason.AUTH_REQUIRED if header is None else Reason.AUTH_INVALID
            self._refuse(flow, reason, None, requested_destination(flow), kind, rid)
            return None
        skill, token = creds
        if not self.runtime.tokens.verify(skill, token):
            self._refuse(flow, Reason.AUTH_INVALID, None, requested_destination(flow), kind, rid,
                         detail=f"claimed skill {skill[:64]!r}")
            return None
        self._skills[flow.client_conn] = skill
        self.guard.authenticated(flow.client_conn)
        return skill

    def _destination(self, flow: http.HTTPFlow, skill: str, kind: str, rid: str) -> Destination | None:
        raw = requested_destination(flow)
        try:
            host = normalise_host(flow.request.host)
        except ValueError as exc:
            self._refuse(flow, Reason.BAD_REQUEST, skill, raw, kind, rid, detail=f"host: {exc}")
            return None
        if kind == "http":
            # Plain HTTP: header bytes, an origin-form target, one Host naming the URI's host.
            head = read_head(flow.request)
            problem = check_head(head, host, flow.request.port, require_host=False)
            if problem is not None:
                self._refuse(flow, problem.reason, skill, Destination(host, flow.request.port),
                             kind, rid, detail=problem.detail)
                return None
            if not head.hosts:
                # Forwarded in origin-form, the request must still name the host judged
                # (RFC 9112 7.2: a proxy generates Host from the target).
                flow.request.headers["Host"] = url.hostport(flow.request.scheme, host,
                                                            flow.request.port)
            return Destination(host, flow.request.port, head.method,
                               judged_path(flow.request.path))
        return Destination(host, flow.request.port)

    async def _vet(self, flow: http.HTTPFlow, skill: str, dest: Destination, kind: str,
                   rid: str, decision: Decision) -> Vetted | None:
        assert self.runtime is not None
        result = await self.runtime.guard.vet(dest.host, dest.port)
        if is_host_name(dest.host):
            self.metrics.dns(failed=isinstance(result, Blocked) and result.reason == Reason.DNS_FAILURE)
        if isinstance(result, Blocked):
            # Never relaxed by report mode: these protect the operator, not the policy.
            self._refuse(flow, result.reason, skill, dest, kind, rid, decision,
                         detail=result.detail)
            return None
        return result

    def _refuse(self, flow: http.HTTPFlow, reason: Reason, skill: str | None, dest: Destination,
                kind: str, rid: str, decision: Decision | None = None, detail: str | None = None) -> None:
        assert self.runtime is not None
        rule = decision.rule if decision is not None else None
        reply = refusal(reason, skill=skill, host=dest.host, port=dest.port, request_id=rid,
                        policy_source=str(rule.source) if rule is not None else None)
        flow.response = http.Response.make(reply.status, reply.body, dict(reply.headers))
        self.metrics.decision("deny", reason, skill, dest.host)
        if skill is not None and reason is not Reason.RATE_LIMITED \
                and not flow.metadata.get("egress_counted"):
            # Denials count toward the skill's rate limit (a flood ends up rate-limited).
            policy = self.runtime.policy.skills.get(skill)
            self.limiter.charge(skill, policy.limits if policy is not None else None)
        self.runtime.record(audit_record(self.runtime.policy.digest, flow, "deny", reason, skill,
                                         dest, kind, rid, decision, detail=detail))

    def _refuse_connection(self, client: connection.Client, reason: Reason, kind: str,
                           skill: str | None, host: str, port: int, detail: str) -> None:
        """Audit a refusal that has no HTTP flow to answer (a TLS handshake, a dial)."""
        assert self.runtime is not None
        self.metrics.decision("deny", reason, skill, host or None)
        self.runtime.record(AuditRecord(
            decision="deny", reason=reason, kind=kind, skill=skill, client=peer_address(client),
            host=host, port=port, policy=self.runtime.policy.digest, detail=detail))

    def _limit(self, flow: http.HTTPFlow, skill: str, dest: Destination, kind: str, rid: str,
               decision: Decision) -> Decision | None:
        """Apply rate limits (egress/ratelimit.py). None: refused with 429. In report mode an
        excess is let through and audited as `report`/`rate_limited` instead."""
        assert self.runtime is not None
        policy = self.runtime.policy.skills.get(skill)
        rule = decision.rule
        report = policy is not None and policy.mode is Mode.REPORT
        exceeded = self.limiter.admit(
            flow.client_conn.id, skill, policy.limits if policy else None,
            rule.label if rule is not None else None, rule.limits if rule is not None else None,
            enforce=not report)
        if exceeded is None or report:
            flow.metadata["egress_counted"] = True  # a later refusal must not count it twice
        if exceeded is None:
            return decision
        if report:
            if decision.verdict is Verdict.REPORT:
                return decision  # already recorded as a would-be denial for its own reason
            return dataclasses.replace(decision, verdict=Verdict.REPORT, reason=Reason.RATE_LIMITED)
        self._refuse(flow, Reason.RATE_LIMITED, skill, dest, kind, rid, decision,
                     detail=exceeded.detail)
        return None

    def _audit_allowed(self, flow: http.HTTPFlow, skill: str, dest: Destination, kind: str,
                       rid: str, decision: Decision, resolved: str) -> None:
        assert self.runtime is not None
        self.metrics.decision(decision.verdict, decision.reason, skill, dest.host)
        if decision.verdict is Verdict.REPORT or self.runtime.policy.settings.audit.log_allowed:
            self.runtime.record(audit_record(
                self.runtime.policy.digest, flow, str(decision.verdict), decision.reason, skill,
                dest, kind, rid, decision, resolved=resolved, detail=decision.detail))
