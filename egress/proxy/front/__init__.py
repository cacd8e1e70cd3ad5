"""The fast path: egress's own listener in front of mitmproxy (issue 16).

    server.py      FrontServer: accepts, books (open, unauthenticated, bytes), sweeps limits
    connection.py  FrontConnection: one client connection, head -> gate -> refusal, relay or
                   hand-over to mitmproxy (egress/proxy/engine.py)
    head.py        the proxy request head, read exactly as mitmproxy's HTTP/1 server reads it
    relay.py       the byte relay of an approved passthrough tunnel (flow control, half-close,
                   reset)
    replies.py     a refusal's reply as the bytes mitmproxy would send

What it may import: the rest of egress/proxy (gate, record, sniff, timeouts, handover,
requestcheck, tunnels), ops (runtime, metrics, rate limits), the audit records, the policy core,
h11 and mitmproxy's small pure helpers (url parsing, host checks). Never mitmproxy's proxy core,
http or tls modules: those stay unloaded until the engine starts. Only egress/proxy/service.py
imports it.
"""
