"""Arguments and helpers shared by several commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from egress.errors import ConfigError
from egress.ops.datadir import default_data_dir
from egress.policy.hosts import parse_listen_address


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, default=None, metavar="DIR",
        help="state directory: token hashes, CA, audit.jsonl "
             "(default: $EGRESS_DATA_DIR, else ~/.local/state/egress)",
    )


def data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir) if args.data_dir else default_data_dir()


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def address_arg(text: str, what: str) -> tuple[str, int]:
    """A HOST:PORT argument (--listen, --admin, --proxy), read by the one host:port parser."""
    try:
        return parse_listen_address(text)
    except ValueError as exc:
        raise ConfigError(f"{what}: {text!r}: {exc}") from None
