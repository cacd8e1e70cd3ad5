"""`egress <noun> <verb>`: parse the command line and hand off to one module per verb."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from egress import __version__
from egress.cli import (
    approvals,
    audit,
    ca,
    check,
    denials,
    openclaw,
    policy,
    report,
    secrets,
    serve,
    token,
)
from egress.cli import exec as exec_
from egress.errors import EgressError

__all__ = ["main"]

_DESCRIPTION = """\
egress is an outbound allowlist proxy for AI-agent skills. Each skill reaches only the hosts
its policy names; everything else is refused before any connection is made, and recorded.

Quick start:
  egress check policies/                 validate the policy files
  egress token issue my-skill            print a token for a skill (shown once)
  egress serve --policies policies/      run the proxy on 127.0.0.1:8080
  egress approvals list                  requests waiting for a person's approval
  HTTPS_PROXY=http://my-skill:TOKEN@127.0.0.1:8080 curl https://api.example.com/
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="egress", description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"egress {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (serve, check, token, ca, denials, report, policy, secrets, audit, approvals,
                   exec_, openclaw):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        code = int(args.run(args))
        sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
        return code
    except EgressError as exc:
        print(f"egress: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `egress denials --json | head`: the reader has what it wanted. Point stdout at
        # /dev/null so the interpreter's final flush does not complain, and exit quietly.
        _quiet_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a command cut off by a pipe


def _quiet_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
