"""`egress token issue|rotate|revoke|list SKILL`: manage the proxy credentials of skills.

Only hashes are stored; a new token is printed once, as the last line of stdout. A running
proxy sees changes on its next request.

`issue|rotate SKILL --k8s-secret` prints Kubernetes Secrets instead, for `kubectl apply -f -`:
`egress-tokens` (DATA_DIR/tokens.json: the hashes of every skill, what the egress pods mount)
and `SKILL-skill-token` (the new token, what the skill's pod reads). They live outside
docker/k8s's kustomization, so `kubectl apply -k docker/k8s` again never resets them.
"""

from __future__ import annotations

import argparse
import json
import re
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
        if verb != "revoke":
            v.add_argument("--k8s-secret", action="store_true",
                           help="print Kubernetes Secrets (egress-tokens with every hash, and "
                                "SKILL-skill-token with the token) for `kubectl apply -f -`")
            v.add_argument("--namespace", default="egress", metavar="NS",
                           help="namespace of the Secrets (default egress)")
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
    if args.k8s_secret:
        sys.stdout.write(k8s_secrets(args.skill, token, store.path.read_text(encoding="utf-8"),
                                     args.namespace))
        print(f"egress: {args.verb}d the token of {args.skill}: it is in the Secret "
              f"{secret_name(args.skill)} above (pipe to `kubectl apply -f -`); "
              f"egress-tokens holds the hashes of every skill in {store.path}",
              file=sys.stderr)
        return 0
    if args.json:
        print(json.dumps({"skill": args.skill, "token": token}))
    else:
        print(f"token for {args.skill} (shown once; store it where the skill can read it):",
              file=sys.stderr)
        print(token)
    return 0


def secret_name(skill: str) -> str:
    """A DNS-1123 name for the skill's token Secret: weather -> weather-skill-token."""
    base = re.sub(r"[^a-z0-9-]+", "-", skill.lower()).strip("-")[:40] or "skill"
    return f"{base}-skill-token"


def k8s_secrets(skill: str, token: str, tokens_json: str, namespace: str) -> str:
    """Two Secrets as YAML (JSON is YAML, and quotes everything safely)."""
    def secret(name: str, data: dict[str, str]) -> str:
        return json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                           "metadata": {"name": name, "namespace": namespace,
                                        "labels": {"app.kubernetes.io/name": "egress"}},
                           "stringData": data}, indent=2)

    return (f"# The token hashes of every skill, and the token of {skill}\n---\n"
            + secret("egress-tokens", {"tokens.json": tokens_json}) + "\n---\n"
            + secret(secret_name(skill), {"token": token}) + "\n")
