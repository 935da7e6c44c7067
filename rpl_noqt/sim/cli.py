"""``rpl-noqt sim``: run the simulated Red Pitaya until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from .server import ClientPolicy, Simulator

log = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=2222, help="TCP port, 0 = any free port (default 2222)")
    parser.add_argument(
        "--client-policy",
        default=ClientPolicy.QUEUE.value,
        choices=[p.value for p in ClientPolicy],
        help="what to do with a second client (default: queue, like the real server's backlog)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the noise generator")
    parser.add_argument("--noise", type=float, default=0.0, metavar="VOLTS",
                        help="white noise (V rms) on both inputs, like a board's ADCs (default 0: noiseless)")


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Simulator(args.host, args.port, client_policy=args.client_policy, seed=args.seed) as sim:
            if args.noise:
                for channel in (1, 2):
                    sim.model.set_loopback(channel, noise=args.noise)
            print(f"rpl-noqt sim listening on {sim.host}:{sim.port}", flush=True)
            while not stop.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
