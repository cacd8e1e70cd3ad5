"""THE CORE: the policy as plain data, and the pure functions over it.

    model.py            frozen dataclasses: PolicySet, SkillPolicy, Rule, Credential, Settings
    load.py             YAML nodes -> model, every problem as `file:line: field: message`
    yamlnodes.py        walking YAML nodes with line numbers; settings_reader.py: `settings:`
    hosts.py            host spelling: IP literals, normalise_host, THE host:port parser
    addresses.py        which addresses may be dialled (built-in classes, settings.networks)
    match.py            host patterns, path globs, path spelling
    decide.py           decide(policy, skill, destination) -> Decision
    secret_refs.py      where a secret lives (SecretRef), never a value
    secret_settings.py  settings.secrets as data
    approval_rules.py   `approval:` on a rule and settings.approvals
    suffixes.py         the Public Suffix List; lint.py: warnings about a valid policy
    units.py            sizes and durations

What it may import: egress.errors, egress.reasons, the standard library and pure libraries
(yaml, idna, publicsuffixlist). Never an adapter (netguard, secrets, credentials, audit,
identity), never the proxy, ops or the CLI, and no I/O library (mitmproxy, aiohttp, dnspython):
tests/test_layout.py checks it. Reading the policy directory is the only I/O (load.py).
"""
