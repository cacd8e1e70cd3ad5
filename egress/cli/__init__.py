"""`egress <noun> <verb>`: one module per verb; main.py parses and dispatches.

What it may import: anything in egress. A verb imports the heavy parts it needs (the proxy,
aiohttp, dnspython) when it runs, not at module level, so `egress token list` loads none of
them. Nothing imports the CLI (tests/test_layout.py checks it).
"""
