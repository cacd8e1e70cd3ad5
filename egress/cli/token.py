"""`egress token issue|rotate|revoke|list SKILL`: manage the proxy credentials of skills.

Only hashes are stored; a new token is printed once, as the last line of stdout. A running
proxy sees changes on its next request.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from egress.cli.common import add_data_dir, add_json, data_dir
from egress.identity import TokenStore


def register(sub: Any) -> None:
    p = sub.add_parser("token", help="issue, rotate, revoke or list skill tokens",
                       description="Manage the tokens skills use as proxy passwords "
                                   "(http://SKILL:TOKEN@host:port).")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, text in (("issue", "create a token for a skill that has none"),
                       ("rotate", "replace a skill's token (the old one stops working)"),
                       ("revoke", "delete a skill's token")):
        v = verbs.add_parser(verb, help=text, description=text)
        v.add_argument("skill", metavar="SKILL")
        add_data_dir(v)
        add_json(v)
        v.set_defaults(run=run)
    ls = verbs.add_parser("list", help="list skills that have tokens (never the tokens)")
    add_data_dir(ls)
    add_json(ls)
    ls.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    store = TokenStore(data_dir(args))
    if args.verb == "list":
        infos = store.list()
        if args.json:
            for i in infos:
                print(json.dumps({"skill": i.skill, "token_id": i.token_id, "created": i.created}))
        else:
            for i in infos:
                print(f"{i.skill}\t{i.token_id}\t{i.created}")
            if not infos:
                print("no tokens issued yet (egress token issue SKILL)", file=sys.stderr)
        return 0
    if args.verb == "revoke":
        store.revoke(args.skill)
        print(f"revoked the token of {args.skill}", file=sys.stderr)
        return 0
    token = store.issue(args.skill) if args.verb == "issue" else store.rotate(args.skill)
    if args.json:
        print(json.dumps({"skill": args.skill, "token": token}))
    else:
        print(f"token for {args.skill} (shown once; store it where the skill can read it):",
              file=sys.stderr)
        print(token)
    return 0
