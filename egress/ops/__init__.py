"""Operations: what runs around the proxy while `egress serve` is up.

    runtime.py     Runtime: the running state (policy, tokens, audit writer, address guard,
                   secret cache), built once, swapped on reload
    supervisor.py  Supervisor: reload watcher, admin endpoint, SIGTERM drain, shutdown
    reload.py      hot reload: file watcher, SIGHUP, POST /reload
    admin.py       the admin endpoint (aiohttp): /healthz, /readyz, /metrics, /reload
    metrics.py     counters and the Prometheus text format
    ratelimit.py   rate limits: token buckets and connection slots
    datadir.py     where state lives when no --data-dir is given

What it may import: the adapters (netguard, secrets, audit, identity), the policy core, and
aiohttp (admin.py only). Never mitmproxy and never egress.proxy: the proxy hands the
supervisor its Master and addon as plain objects. Importing this package imports nothing.
"""
