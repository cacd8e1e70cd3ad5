"""`egress approvals` and `egress console`: decide held requests from a shell, open the console.

    egress approvals list [--all] [--json]     what waits for a decision
    egress approvals show ID [--json]          everything the person approves (masked)
    egress approvals approve ID [--note TEXT]  the identical request goes through, once
    egress approvals deny ID [--note TEXT]     identical requests are refused while it stands
    egress console [--name NAME]               print a one-time login link to the console

The running egress is found through the data directory (`egress serve` writes its admin
address to DATA_DIR/admin.json) or `--admin HOST:PORT`. The token is $EGRESS_ADMIN_TOKEN,
DATA_DIR/admin-token, or the one `egress serve` generated for its run (in admin.json). The
decision is recorded as made by the user running the command (`--as` names someone else).
Talks to the admin endpoint directly, never through a proxy from the environment.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import unicodedata
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from egress.cli.common import add_data_dir, add_json, address_arg, data_dir
from egress.errors import ConfigError

_TIMEOUT = 15.0
_SHOWN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def register(sub: Any) -> None:
    p = sub.add_parser(
        "approvals", help="list, show, approve or deny requests held for approval",
        description="Requests that an approval rule covers wait for a person. Decide them "
                    "here or in the console (egress console).")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    listing = verbs.add_parser("list", help="approvals waiting for a decision")
    listing.add_argument("--all", action="store_true",
                         help="also recently decided, used and expired ones")
    add_json(listing)
    show = verbs.add_parser("show", help="one approval in full (masked body preview)")
    show.add_argument("id")
    add_json(show)
    for verb, text in (("approve", "let the identical request through, once"),
                       ("deny", "refuse it (and identical retries while the denial stands)")):
        v = verbs.add_parser(verb, help=text)
        v.add_argument("id")
        v.add_argument("--note", metavar="TEXT", help="why (recorded in the audit log)")
        v.add_argument("--as", dest="who", metavar="NAME",
                       help="who decides (default: the user running this command)")
        add_json(v)
    for v in (listing, show, *[verbs.choices[n] for n in ("approve", "deny")]):
        _connection_args(v)
    p.set_defaults(run=run)

    c = sub.add_parser("console", help="print a one-time login link to the operator console",
                       description="Print a link that logs a browser in to the console at "
                                   "/ui/ of the running egress (valid once, for 2 minutes).")
    c.add_argument("--name", metavar="NAME",
                   help="who logs in (recorded with decisions; default: this user)")
    _connection_args(c)
    c.set_defaults(run=run_console)


def _connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--admin", metavar="HOST:PORT",
                        help="the admin endpoint (default: read from DATA_DIR/admin.json)")
    add_data_dir(parser)


def run(args: argparse.Namespace) -> int:
    client = AdminClient.from_args(args)
    if args.verb == "list":
        body = client.call("GET", "/api/approvals" + ("?all=1" if args.all else ""))
        if args.json:
            print(json.dumps(body["approvals"], indent=2))
        else:
            _print_list(body["approvals"])
        return 0
    if args.verb == "show":
        body = client.call("GET", f"/api/approvals/{_id(args.id)}")
        if args.json:
            print(json.dumps(body, indent=2))
        else:
            _print_one(body)
        return 0
    who = args.who or _user()
    body = client.call("POST", f"/api/approvals/{_id(args.id)}/{args.verb}",
                       {"note": args.note, "by": who, "via": "cli"})
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        done = "approved" if args.verb == "approve" else "denied"
        print(f"{done} {body['id']}: {_safe(_request(body))} (skill {_safe(body['skill'])}), "
              f"by {_safe(body.get('decided_by') or who)}")
    return 0


def run_console(args: argparse.Namespace) -> int:
    client = AdminClient.from_args(args)
    body = client.call("POST", "/api/login-link", {"name": args.name or _user()})
    print(f"{client.base}{body['path']}")
    print(f"(one use, valid {body['expires_in']} s; logs in as {_safe(body['user'])})",
          file=sys.stderr)
    return 0


class AdminClient:
    def __init__(self, base: str, token: str | None) -> None:
        self.base, self.token = base.rstrip("/"), token
        # Never through HTTP(S)_PROXY from the environment: the admin endpoint is local.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AdminClient:
        data = data_dir(args)
        record = _admin_record(data)
        if args.admin:
            host, port = address_arg(args.admin, "--admin")
            base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        elif record is not None:
            base = str(record["url"])
        else:
            raise ConfigError(f"no running egress found: {data / 'admin.json'} is missing "
                              f"(is `egress serve` running with this --data-dir and its admin "
                              f"endpoint on?); or pass --admin HOST:PORT")
        token = os.environ.get("EGRESS_ADMIN_TOKEN", "").strip() or None
        if token is None:
            try:
                token = (data / "admin-token").read_text(encoding="utf-8").strip() or None
            except FileNotFoundError:
                token = None
            except OSError as exc:
                raise ConfigError(f"cannot read {data / 'admin-token'}: "
                                  f"{type(exc).__name__}") from None
        if token is None and record is not None and isinstance(record.get("token"), str):
            token = record["token"]
        return cls(base, token)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with self._opener.open(request, timeout=_TIMEOUT) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("message", "")
            except (ValueError, AttributeError):
                detail = ""
            if exc.code == 401:
                detail = ("the admin endpoint wants a token: set EGRESS_ADMIN_TOKEN, or run "
                          "this as a user who can read the data directory")
            raise ConfigError(f"{method} {path}: HTTP {exc.code}: {_safe(str(detail))}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ConfigError(f"cannot reach the admin endpoint at {self.base}: "
                              f"{getattr(exc, 'reason', exc)}") from None


def _admin_record(data: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((data / "admin.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("url"), str) else None


def _id(text: str) -> str:
    if not (len(text) == 12 and all(c in "0123456789abcdef" for c in text)):
        raise ConfigError(f"{_safe(text)!r} is not an approval id (12 hex digits, as `egress "
                          f"approvals list` shows)")
    return text


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _safe(text: object) -> str:
    """Text for a terminal: controls, bidi and invisible characters escaped (the server has
    made skill text visible already; this holds even if it had not)."""
    out = []
    for ch in str(text):
        if ch != "\n" and unicodedata.category(ch) in _SHOWN_CATEGORIES:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def _request(a: dict[str, Any]) -> str:
    port = "" if a.get("port") in (443, 80) else f":{a.get('port')}"
    query = f"?{a['query']}" if a.get("query") else ""
    return f"{a.get('method')} {a.get('host')}{port}{a.get('path')}{query}"


def _print_list(approvals: list[dict[str, Any]]) -> None:
    if not approvals:
        print("no approvals waiting")
        return
    rows = [("ID", "STATE", "SKILL", "REQUEST", "ASKED", "TIMES", "RULE")]
    for a in approvals:
        rows.append((a["id"], a["state"], a["skill"], _request(a)[:80], a["asked_at"],
                     str(a["asked"]), a["rule"]))
    widths = [max(len(_safe(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(_safe(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _print_one(a: dict[str, Any]) -> None:
    lines = [
        ("approval", a["id"]), ("state", a["state"]), ("skill", a["skill"]),
        ("request", _request(a)), ("rule", a["rule"]), ("credential", a.get("credential") or "none"),
        ("asked", f"{a['asked_at']} ({a['asked']} time{'s' if a['asked'] != 1 else ''})"),
        ("open until", a["expires_at"]),
        ("identical before", ", ".join(f"{n} {k}" for k, n in a["previous"].items()) or "never"),
        ("skill asked before", str(a["skill_asked_before"])),
        ("request id", a["request_id"]),
    ]
    if a.get("decided_by"):
        lines.append(("decided by", f"{a['decided_by']} at {a['decided_at']}"))
    if a.get("note"):
        lines.append(("note", a["note"]))
    for label, value in lines:
        print(f"{label + ':':<20}{_safe(value)}")
    if a["headers"]:
        print("headers:")
        for name, value in a["headers"]:
            print(f"  {_safe(name)}: {_safe(value)}")
    if a["body_kind"] == "none":
        print("body:               none")
        return
    print(f"body:               {a['body_kind']}, {a['body_size']} bytes, sha256 "
          f"{a['body_sha256']}")
    for line in str(a["body"]).split("\n"):
        print(f"  {_safe(line)}")
