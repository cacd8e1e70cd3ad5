"""The proxy: THE ONLY PACKAGE THAT IMPORTS MITMPROXY.

    gate.py           flow-free admission: what arrived -> Admitted | Refused (no mitmproxy)
    record.py         every decision to metrics and the audit log, and the reply of a refusal
    addon.py          EgressAddon: mitmproxy hooks -> gate calls; applies a refusal in one place
    flows.py          reading mitmproxy flows into plain descriptions; replies into responses
    tunnels.py        an approved CONNECT's state, the SNI rule
    layers.py         egress chooses every tunnel's protocol layer (no raw relay on a guess)
    connguard.py      timeouts and caps on client connections
    connections.py    connection accounting: open connections, bytes, rate-limit slots
    requestcheck.py   the shape of a request head before it is judged (pure)
    upgrades.py       protocol switches: only WebSocket (pure)
    websocket.py      WebSocket messages: streamed, capped, checked for keys
    bodies.py         request and response bodies around a brokered credential
    approval_hold.py  a request an approval rule covers: body read whole (capped), held for
                      a person (egress/ops/approvals.py), forwarded as approved or refused
    header_limit.py   a cap on unfinished HTTP/1 request heads
    protocol_audit.py mitmproxy's own refusals (parse errors) into the audit log
    connclose.py      a connection egress closes is closed, socket and all
    ca.py             egress's CA (DATA_DIR/ca)
    master.py         the lean mitmproxy Master of `egress serve`
    front/            the fast path: egress's own listener; refusals and passthrough relays
                      without mitmproxy, the rest handed over (see its docstring)
    service.py        the running proxy as the supervisor drives it (fast path or mitmproxy)
    engine.py         mitmproxy behind the fast path: started when needed, fed connections
    handover.py       a handed-over connection's admission, and the check it was read alike
    deciding.py       one gate, recorder, metrics and rate limiter shared by both paths
    sniff.py          a tunnel's first bytes: ClientHello (and SNI), request line (pure)
    timeouts.py       which connection limit a connection broke (pure, both paths)

What it may import: mitmproxy, ops (metrics, rate limits, the runtime), the adapters
(netguard, secrets, credentials, audit, identity) and the policy core. Nothing imports it but
the CLI (`egress serve`, `egress ca`, ...) and addons/egress.py.
"""
