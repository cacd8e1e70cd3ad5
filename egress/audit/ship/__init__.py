"""Shipping audit lines off the host: from the spool to syslog and HTTP receivers.

    shipper.py   Shipper: a thread with its own event loop, one lane per destination
                 (read from the spool, send, confirm, move the cursor); DestinationStats
    syslog.py    RFC 5424 over TCP (or TLS), octet-counted frames (RFC 6587)
    http.py      batched POSTs: JSON Lines, Loki's push API, OCSF events
    ocsf.py      an audit line as an OCSF 1.5 event

What it may import: the standard library, egress.audit, egress.secrets (the `token:`
reference of an HTTP destination), the policy core, and aiohttp (http.py only, imported when
an HTTP destination starts). Never mitmproxy, the proxy, ops or the CLI.
"""
