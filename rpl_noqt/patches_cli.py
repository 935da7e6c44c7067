"""``rpl-noqt patches``: activate, import pyrpl, print what was replaced."""

from __future__ import annotations

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-import", action="store_true", help="activate only; do not import pyrpl")


def run(args: argparse.Namespace) -> int:
    import rpl_noqt

    record = rpl_noqt.activate()
    if not args.no_import:
        import pyrpl  # noqa: F401 - importing is what fills the record

    print(record.format())
    return 0
