"""Command line entry point: ``rpl-noqt <command>``.

Each command lives in its own module and exposes ``configure_parser(parser)``
and ``run(args) -> int``; this file only dispatches, so importing it stays cheap
and never activates the shim by itself.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

#: command name -> (module implementing it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "sim": ("rpl_noqt.sim.cli", "run the simulated Red Pitaya monitor server"),
    "demo": ("rpl_noqt.demo", "drive a simulated board from several threads and report"),
    "patches": ("rpl_noqt.patches_cli", "activate the shim and print the patch record"),
    "compat": ("rpl_noqt.compat.cli", "run PyRPL's own test suite under the shim on the simulator"),
    "serve": ("rpl_noqt.remote.cli", "serve a board to other processes and PCs over LECO (leco://NAME)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rpl-noqt", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text)
        module = importlib.import_module(module_name)
        module.configure_parser(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args._run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
