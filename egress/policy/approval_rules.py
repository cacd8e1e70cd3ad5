"""Reading `approval:` on a rule and `settings.approvals` (the loader's part for approvals).

    - host: api.stripe.com
      methods: [POST]
      credential: stripe-write
      approval: {wait: 20, valid_for: 600}     # or `approval: true` for these defaults

    settings:
      approvals:
        notify:
          webhook: "env:EGRESS_APPROVAL_WEBHOOK"  # or an https:// URL, or file:/PATH
          command: ["/usr/local/bin/page-oncall", "--egress"]
          timeout: 5s
        max_body: 1MiB          # bodies of approval rules are read whole, up to this
        max_pending: 20         # open approvals (and requests held at once) per skill
        console_url: "https://egress-admin.internal/ui/"   # for links in notifications

Pure: functions over a NodeReader (problems collected as `file:line: field: message`).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import yaml

from egress.policy.model import Approval, ApprovalNotify, ApprovalSettings
from egress.policy.units import parse_duration, parse_size
from egress.policy.yamlnodes import NodeReader

__all__ = ["VALID_FOR_RANGE", "WAIT_RANGE", "read_approval_settings", "read_rule_approval"]

WAIT_RANGE = (0.0, 600.0)  # 0: answer 428 at once, the agent retries after the decision
VALID_FOR_RANGE = (10.0, 7 * 86400.0)
_RULE_KEYS = ("wait", "valid_for")
_SETTINGS_KEYS = ("notify", "max_body", "max_pending", "console_url")
_NOTIFY_KEYS = ("webhook", "command", "timeout")
_BODY_RANGE = (1024, 64 * 2**20)  # bodies are held in memory while a person decides


def read_rule_approval(reader: NodeReader, file: str, field: str,
                       node: yaml.Node) -> Approval | None:
    """`approval: true`, `approval: {}` or `approval: {wait: 20, valid_for: 10m}`."""
    where = f"{field}.approval"
    if isinstance(node, yaml.ScalarNode):
        value = reader.scalar(file, node, where, bool,
                              "true, or a mapping such as {wait: 20, valid_for: 600}")
        if value is False:
            return None
        return Approval() if value else None
    fields = reader.mapping(file, node, where, _RULE_KEYS)
    if fields is None:
        return None
    default = Approval()
    wait = _duration(reader, file, fields, "wait", where, WAIT_RANGE)
    valid_for = _duration(reader, file, fields, "valid_for", where, VALID_FOR_RANGE)
    return Approval(wait=default.wait if wait is None else wait,
                    valid_for=default.valid_for if valid_for is None else valid_for)


def read_approval_settings(reader: NodeReader, file: str, node: yaml.Node) -> ApprovalSettings:
    fields = reader.mapping(file, node, "settings.approvals", _SETTINGS_KEYS) or {}
    default = ApprovalSettings()
    notify = default.notify
    if "notify" in fields:
        notify = _notify(reader, file, fields["notify"][1])
    max_body = default.max_body
    size = reader.parsed_unit(file, fields, "max_body", parse_size, "a size such as 1MiB",
                              "settings.approvals")
    if size is not None:
        low, high = _BODY_RANGE
        if not low <= size <= high:
            reader.error(file, fields["max_body"][1], "settings.approvals.max_body",
                         "must be between 1KiB and 64MiB (bodies are held in memory)")
        else:
            max_body = int(size)
    max_pending = default.max_pending
    if "max_pending" in fields:
        n = reader.scalar(file, fields["max_pending"][1], "settings.approvals.max_pending",
                          int, "a whole number")
        if n is not None and not 1 <= n <= 1000:
            reader.error(file, fields["max_pending"][1], "settings.approvals.max_pending",
                         "must be between 1 and 1000 (open approvals per skill)")
        elif n is not None:
            max_pending = n
    console_url = None
    if "console_url" in fields:
        console_url = reader.parsed(file, fields["console_url"][1],
                                    "settings.approvals.console_url", _http_url)
    return ApprovalSettings(notify=notify, max_body=max_body, max_pending=max_pending,
                            console_url=console_url)


def _notify(reader: NodeReader, file: str, node: yaml.Node) -> ApprovalNotify:
    where = "settings.approvals.notify"
    fields = reader.mapping(file, node, where, _NOTIFY_KEYS) or {}
    webhook = None
    if "webhook" in fields:
        webhook = reader.parsed(file, fields["webhook"][1], f"{where}.webhook", _webhook)
    command: tuple[str, ...] | None = None
    if "command" in fields:
        argv: list[str] = []
        for i, item in reader.items(file, fields["command"][1], f"{where}.command"):
            arg = reader.scalar(file, item, f"{where}.command[{i}]", str, "a string")
            if arg is not None:
                argv.append(arg)
        node = fields["command"][1]
        if argv and not argv[0].startswith("/"):
            reader.error(file, node, f"{where}.command",
                         f"{argv[0]!r}: give the program's absolute path (no PATH lookup, "
                         f"no shell), e.g. [/usr/local/bin/notify, --flag]")
        elif not argv and isinstance(node, yaml.SequenceNode) and not node.value:
            reader.error(file, node, f"{where}.command", "empty; give [/path/to/program, args...]")
        elif argv:
            command = tuple(argv)
    timeout = ApprovalNotify().timeout
    seconds = reader.parsed_unit(file, fields, "timeout", parse_duration, "a duration such as 5s",
                                 where)
    if seconds is not None:
        if not 0.1 <= seconds <= 60:
            reader.error(file, fields["timeout"][1], f"{where}.timeout",
                         "must be between 0.1s and 60s")
        else:
            timeout = seconds
    return ApprovalNotify(webhook=webhook, command=command, timeout=timeout)


def _duration(reader: NodeReader, file: str, fields: dict[str, tuple[yaml.Node, yaml.Node]],
              key: str, where: str, bounds: tuple[float, float]) -> float | None:
    seconds = reader.parsed_unit(file, fields, key, parse_duration,
                                 "a duration in seconds, or such as 20s or 10m", where)
    if seconds is None:
        return None
    low, high = bounds
    if not low <= seconds <= high:
        reader.error(file, fields[key][1], f"{where}.{key}",
                     f"must be between {low:g}s and {high:g}s")
        return None
    return seconds


def _http_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text[:80]!r} is not an http(s) URL; write e.g. "
                         f"https://egress-admin.example.com/ui/")
    return text


def _webhook(text: str) -> str:
    """An http(s) URL, or env:NAME / file:/PATH naming where the URL is kept (a Slack webhook
    URL is a secret: it should not sit in a policy file)."""
    if text.startswith("env:"):
        if not text[4:] or not text[4:].replace("_", "").isalnum():
            raise ValueError("env:NAME needs an environment variable name, e.g. "
                             "env:EGRESS_APPROVAL_WEBHOOK")
        return text
    if text.startswith("file:"):
        if not text[5:].startswith("/"):
            raise ValueError("file:PATH needs an absolute path, e.g. file:/run/secrets/webhook")
        return text
    try:
        return _http_url(text)
    except ValueError:
        raise ValueError("must be an http(s) URL, env:NAME or file:/PATH") from None

