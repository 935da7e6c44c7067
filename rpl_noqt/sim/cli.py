"""``rpl-noqt sim``: run the simulated Red Pitaya until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from .plants import PLANTS
from .plants.simulator import Simulator
from .server import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_QUEUE_TIMEOUT, ClientPolicy

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
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS, metavar="N",
                        help=f"connections open at once; more are closed at once, logged (default "
                             f"{DEFAULT_MAX_CONNECTIONS})")
    parser.add_argument("--queue-timeout", type=_seconds, default=DEFAULT_QUEUE_TIMEOUT, metavar="S",
                        help=f"queue/exit: longest wait of a client for its turn, 0 = no limit (default "
                             f"{DEFAULT_QUEUE_TIMEOUT:g})")
    parser.add_argument("--idle-timeout", type=_seconds, default=DEFAULT_IDLE_TIMEOUT, metavar="S",
                        help=f"queue/exit: how long the current client may sit idle while another waits, "
                             f"0 = no limit (default {DEFAULT_IDLE_TIMEOUT:g})")
    parser.add_argument("--plant", default=None, choices=sorted(PLANTS),
                        help="a physical system behind the outputs instead of the cables (see docs/simulator.md)")
    parser.add_argument("--plant-param", action="append", default=[], metavar="NAME=VALUE",
                        help="a plant parameter, e.g. --plant-param linewidth=1e5 (repeatable)")
    parser.add_argument("--input-range", default="LV", choices=["LV", "HV"],
                        help="input range jumpers of both inputs: LV +-1 V (default, what PyRPL assumes) or "
                             "HV +-20 V (the ADCs see 1/20)")
    parser.add_argument("--rolloff", action="store_true",
                        help="model the analog roll-off near Nyquist (DAC sinc, 50 MHz filters; default: flat)")


def _seconds(text: str) -> float | None:
    """A time limit in seconds; 0 means none."""
    value = float(text)
    return None if value == 0 else value


def _plant_params(args: argparse.Namespace) -> dict[str, float]:
    params: dict[str, float] = {}
    for item in args.plant_param:
        name, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            params[name.strip()] = float(value)
        except ValueError:
            raise SystemExit(f"--plant-param wants NAME=NUMBER, got {item!r}") from None
    if params and args.plant is None:
        raise SystemExit("--plant-param needs --plant")
    return params


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    params = _plant_params(args)
    try:
        sim = Simulator(args.host, args.port, client_policy=args.client_policy, seed=args.seed,
                        plant=args.plant, plant_params=params or None,
                        input_range=getattr(args, "input_range", "LV"), rolloff=getattr(args, "rolloff", False),
                        max_connections=getattr(args, "max_connections", DEFAULT_MAX_CONNECTIONS),
                        queue_timeout=getattr(args, "queue_timeout", DEFAULT_QUEUE_TIMEOUT),
                        idle_timeout=getattr(args, "idle_timeout", DEFAULT_IDLE_TIMEOUT))
    except ValueError as exc:
        raise SystemExit(f"rpl-noqt sim: {exc}") from None
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with sim:
            if args.noise:
                for channel in (1, 2):
                    sim.model.set_loopback(channel, noise=args.noise)
            print(f"rpl-noqt sim listening on {sim.host}:{sim.port}", flush=True)
            if sim.plant is not None:
                print(f"plant: {sim.plant.describe()}", flush=True)
                print(f"PyRPL config for it: {sim.pyrpl_config} "
                      f"(rpl_noqt.connect(host, port, ssh=False, config=pathlib.Path(...)))", flush=True)
            while not stop.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
