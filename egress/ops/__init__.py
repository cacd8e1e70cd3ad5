"""Operations: what runs around the proxy while `egress serve` is up.

    runtime.py     Runtime: the running state (policy, tokens, audit writer, address guard,
                   secret cache), built once, swapped on reload
    supervisor.py  Supervisor: reload watcher, admin endpoint, SIGTERM drain, shutdown
    reload.py      hot reload: file watcher, SIGHUP, POST /reload
    admin.py       the admin endpoint (aiohttp): /healthz, /readyz, /metrics, /reload
    adminfile.py   DATA_DIR/admin.json: where `egress approvals` finds the admin endpoint
    approvals.py   ApprovalBook: requests held for a person, one decision per identical request
    approval_view.py  what the person sees: masked query, headers and body preview (pure)
    notify.py      telling people an approval waits: webhook (Slack-compatible), command
    console.py     the operator console (/ui/, assets in console/) and its guard: sessions,
                   CSRF, security headers
    console_api.py the operator API (/api/): approvals, server-sent events, activity, skills
    sessions.py    console sessions and one-time login codes
    activity.py    requests and denials per skill over time; audit tails for the console
    metrics.py     counters and the Prometheus text format
    ratelimit.py   rate limits: token buckets and connection slots
    datadir.py     where state lives when no --data-dir is given

What it may import: the adapters (netguard, secrets, credentials, audit, identity), the
policy core, and aiohttp (the admin endpoint, the console and the webhook notifier). Never mitmproxy and never egress.proxy: the proxy hands the
supervisor its Master and addon as plain objects. Importing this package imports nothing.
"""
