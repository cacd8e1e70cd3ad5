"""Brokered credentials: one concern, the credential side of every request, body and message.

    detect.py   THE detector: where a placeholder or key shows up, raw or encoded (base64, hex,
                percent), in header values and targets, in a streamed body, in a WebSocket
                message; and the redactor for an upstream's echo of a key
    broker.py   CredentialBroker: refuse stray credentials, fetch the bound one from the
                secret cache, put it into the request, and what a body must not carry

A skill holds at most a placeholder; egress puts the real key only into requests to the hosts
the key is bound to, over verified TLS, and refuses a placeholder or key anywhere else.

What it may import: the policy core, egress.secrets (Secret, SecretCache), egress.errors and
egress.reasons. Never mitmproxy (the glue is egress/proxy/bodies.py and websocket.py), never
the proxy, ops or the CLI.
"""
