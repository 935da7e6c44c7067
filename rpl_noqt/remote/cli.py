"""``rpl-noqt serve HOST --name NAME``: serve a board over LECO until SIGINT/SIGTERM.

Prints one line saying where it serves (``leco://NAME@HOST:PORT``), then
waits. A signal stops it cleanly within 2 s: the actor signs out, the
board session closes (config flushed, board socket closed) and an embedded
coordinator stops. Exit status 0 after a clean stop, 1 if it could not
start (the reason on stderr, no traceback), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

__all__ = ("configure_parser", "run")

logger = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("host", help="the board's hostname or IP address (or a simulator's)")
    parser.add_argument("--port", type=int, default=2222, help="the board's monitor-server port (default 2222)")
    parser.add_argument("--no-ssh", dest="ssh", action="store_false",
                        help="connect to a monitor server that already runs (no SSH login, no FPGA upload)")
    parser.add_argument("--config", default=None,
                        help="PyRPL config name, kept in $PYRPL_USER_DIR/config/NAME.yml (default: in memory)")
    parser.add_argument("--name", required=True, help="the LECO name clients use: leco://NAME")
    parser.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                        help="the LECO coordinator (default 127.0.0.1:12300); started here if none answers")
    parser.add_argument("--bind", default=None, metavar="ADDR",
                        help="interface an embedded coordinator binds (default: loopback). LECO has no "
                             "authentication: bind a lab-network interface only on purpose")


def run(args: argparse.Namespace) -> int:
    try:
        from ._deps import require_pyleco

        require_pyleco()
    except ImportError as exc:
        print(f"rpl-noqt serve: {exc}", file=sys.stderr)
        return 1
    from ..errors import BoardConnectionError
    from .server import serve

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server = serve(args.host, args.port, name=args.name, coordinator=args.coordinator, bind=args.bind,
                           config=args.config, ssh=args.ssh)
        except (BoardConnectionError, ValueError, OSError, TimeoutError) as exc:
            print(f"rpl-noqt serve: could not start: {exc}", file=sys.stderr)
            return 1
        with server:
            print(server.describe(), flush=True)
            while not stop.is_set() and not server.wait(0.1):
                pass
            if not stop.is_set():
                print("rpl-noqt serve: the server stopped on its own (see the log)", file=sys.stderr)
                return 1
        logger.info("stopped by signal")
        return 0
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
