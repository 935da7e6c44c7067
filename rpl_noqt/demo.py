"""``rpl-noqt demo``: several threads drive one simulated board at once.

Starts the embedded simulator (or uses ``--host/--port`` for a running monitor
server), opens one session, then concurrently:

* an ASG thread generates a sine on out1 (looped back to in1) and re-grabs it
  with ``scope.single()``, fitting frequency and amplitude;
* a PID thread locks in2 to a setpoint through the out2 -> in2 loopback;
* a monitor thread reads DSP signals with the sampler.

It prints what it measured and exits non-zero if a measurement is off or any
thread failed. ``--plot FILE.png`` draws the traces (needs matplotlib: the
``plot`` extra).

``--lock`` instead puts the ``fabry-perot`` plant behind the simulated board
(see ``docs/simulator.md``) and runs PyRPL's own lockbox on it, as a user
would: ``calibrate_all()`` sweeps the piezo and calibrates transmission,
reflection and the PDH error signal, then ``lock()`` runs the lock sequence
(side of fringe, then PDH) while a second thread samples transmission, error
signal and piezo voltage; it prints the lock time and how close to its
maximum the transmission stays, and ``--plot`` draws the acquisition.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class DemoResult:
    frequency_set: float
    amplitude_set: float
    setpoint: float
    scope_fits: list[Any] = field(default_factory=list)
    last_trace: tuple[np.ndarray, np.ndarray] | None = None
    pid_trace: list[tuple[float, float]] = field(default_factory=list)
    sampler_reads: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def frequency_error(self) -> float:
        return max(abs(f.frequency / self.frequency_set - 1) for f in self.scope_fits)

    @property
    def amplitude_error(self) -> float:
        return max(abs(f.amplitude / self.amplitude_set - 1) for f in self.scope_fits)

    @property
    def settled(self) -> float:
        tail = [v for _, v in self.pid_trace[-5:]]
        return float(np.mean(tail)) if tail else float("nan")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="monitor server to use instead of the embedded simulator")
    parser.add_argument("--port", type=int, default=None, help="its port (with --host)")
    parser.add_argument("--frequency", type=float, default=1000.0, help="ASG frequency in Hz (default 1000)")
    parser.add_argument("--amplitude", type=float, default=0.5, help="ASG amplitude in V (default 0.5)")
    parser.add_argument("--setpoint", type=float, default=0.3, help="PID setpoint in V (default 0.3)")
    parser.add_argument("--seconds", type=float, default=3.0, help="how long the threads run (default 3)")
    parser.add_argument("--plot", metavar="FILE.png", default=None, help="write a picture of the traces")
    parser.add_argument("--lock", action="store_true",
                        help="lock a simulated Fabry-Perot cavity with PyRPL's lockbox instead (sweep, calibrate, lock)")


def _check(args: argparse.Namespace) -> None:
    if not 1.0 <= args.frequency <= 1e6:
        raise SystemExit(f"--frequency must be between 1 Hz and 1 MHz, got {args.frequency}")
    if not 0.0 < args.amplitude <= 0.9:
        raise SystemExit(f"--amplitude must be in (0, 0.9] V, got {args.amplitude}")
    if not -0.9 <= args.setpoint <= 0.9:
        raise SystemExit(f"--setpoint must be within +-0.9 V, got {args.setpoint}")
    if not 0.5 <= args.seconds <= 600:
        raise SystemExit(f"--seconds must be between 0.5 and 600, got {args.seconds}")
    if (args.host is None) != (args.port is None):
        raise SystemExit("--host and --port go together")
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SystemExit("--plot needs matplotlib: pip install 'rpl-noqt[plot]'") from None


@contextlib.contextmanager
def _board(args: argparse.Namespace) -> Iterator[tuple[str, int]]:
    if args.host is not None:
        yield args.host, args.port
        return
    from .sim import Simulator

    with Simulator() as sim:
        print(f"simulated Red Pitaya listening on {sim.host}:{sim.port}")
        yield sim.host, sim.port


def run_demo(host: str, port: int, frequency: float, amplitude: float, setpoint: float, seconds: float) -> DemoResult:
    """Drive the board from three threads for ``seconds``; return the measurements."""
    import rpl_noqt
    from .analysis import fit_sine

    result = DemoResult(frequency, amplitude, setpoint)
    with rpl_noqt.connect(host, port, ssh=False) as session:
        rp = session.rp
        periods = 20
        rp.asg0.setup(waveform="sin", frequency=frequency, amplitude=amplitude, offset=0.0,
                      trigger_source="immediately", output_direct="out1")
        rp.scope.setup(input1="in1", input2="asg0", duration=periods / frequency,
                       trigger_source="immediately", average=True)
        # PyRPL's PID error is (input - setpoint): a +1 cable needs a negative gain
        rp.pid0.setup(input="in2", output_direct="out2", setpoint=setpoint, p=0.0, i=-1000.0, ival=0.0)
        # the clock starts once the board is set up, and each thread does its work at least
        # once, however slow the machine: the demo measures the board, not the machine
        deadline = time.monotonic() + seconds

        def asg_to_scope() -> None:
            while not result.scope_fits or time.monotonic() < deadline:
                curves = rp.scope.single(timeout=10)
                times = rp.scope.times
                result.scope_fits.append(fit_sine(times, curves[0]))
                result.last_trace = (np.array(times), np.array(curves[0]))

        def pid_lock() -> None:
            start = time.monotonic()
            while not result.pid_trace or time.monotonic() < deadline:
                result.pid_trace.append((time.monotonic() - start, float(rp.sampler.in2)))
                time.sleep(0.01)

        def monitor() -> None:
            while not result.sampler_reads or time.monotonic() < deadline:
                float(rp.sampler.out1), float(rp.sampler.pid0)
                result.sampler_reads += 2

        def guarded(target: Any) -> Any:
            def run() -> None:
                try:
                    target()
                except Exception as exc:  # reported in the summary
                    logger.exception("demo thread %s failed", threading.current_thread().name)
                    result.errors.append(f"{threading.current_thread().name}: {exc!r}")
            return run

        threads = [threading.Thread(target=guarded(fn), name=name)
                   for name, fn in (("asg-scope", asg_to_scope), ("pid", pid_lock), ("monitor", monitor))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 30)
        result.errors.extend(f"{t.name}: did not stop" for t in threads if t.is_alive())
    return result


def _plot(result: DemoResult, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6))
    if result.last_trace is not None:
        t, y = result.last_trace
        ax1.plot(t * 1e3, y)
        ax1.set(xlabel="time [ms]", ylabel="in1 [V]", title=f"ASG {result.frequency_set:g} Hz looped back to the scope")
    if result.pid_trace:
        t2, v = zip(*result.pid_trace)
        ax2.plot(t2, v, label="in2 (sampler)")
        ax2.axhline(result.setpoint, color="k", ls="--", label="setpoint")
        ax2.set(xlabel="time [s]", ylabel="[V]", title="PID lock through the out2 -> in2 loopback")
        ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


@dataclass
class LockDemoResult:
    calibration: dict[str, tuple[float, float]] = field(default_factory=dict)  # input -> (min, max)
    lock_time: float = float("nan")
    locked: bool = False
    trace: list[tuple[float, float, float, float]] = field(default_factory=list)  # (t, in1, error, out1)
    lock_started: float = 0.0
    t_max: float = float("nan")
    errors: list[str] = field(default_factory=list)

    def held(self, after: float) -> float:
        """Lowest transmission, relative to its calibrated maximum, from ``after`` s past the lock's start."""
        tail = [v for t, v, _, _ in self.trace if t >= self.lock_started + after]
        return min(tail) / self.t_max if tail else float("nan")


def run_lock_demo(host: str, port: int, config: Any, seconds: float) -> LockDemoResult:
    """Calibrate and lock the cavity with PyRPL's lockbox, sampling it from a second thread."""
    import rpl_noqt

    result = LockDemoResult()
    with rpl_noqt.connect(host, port, ssh=False, config=config) as session:
        lockbox = session.pyrpl.lockbox
        lockbox.calibrate_all()
        for name in ("transmission", "reflection", "pdh"):
            data = lockbox.inputs[name].calibration_data
            result.calibration[name] = (float(data.min), float(data.max))
        result.t_max = result.calibration["transmission"][1]
        error_signal = lockbox.inputs.pdh.signal()
        sampler = session.rp.sampler
        stop = threading.Event()
        start = time.monotonic()

        def sample() -> None:
            try:
                while not stop.is_set():
                    result.trace.append((time.monotonic() - start, float(sampler.in1),
                                         float(getattr(sampler, error_signal)), float(sampler.out1)))
                    time.sleep(0.005)
            except Exception as exc:  # reported in the summary
                logger.exception("lock demo sampler failed")
                result.errors.append(f"sampler: {exc!r}")

        thread = threading.Thread(target=sample, name="lock-sampler")
        thread.start()
        try:
            time.sleep(0.2)  # before: the piezo still sweeps, as calibrate_all() left it
            result.lock_started = time.monotonic() - start
            result.locked = bool(lockbox.lock())
            result.lock_time = time.monotonic() - start - result.lock_started
            time.sleep(seconds)
            result.locked = result.locked and bool(lockbox.is_locked())
        finally:
            stop.set()
            thread.join(10)
        lockbox.unlock()
    return result


def _plot_lock(result: LockDemoResult, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, trans, err, piezo = (np.array(c) for c in zip(*result.trace))
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    for ax, y, label in zip(axes, (trans, err, piezo),
                            ("transmission in1 [V]", "PDH error (IQ) [V]", "piezo out1 [V]"), strict=True):
        ax.plot(t, y, lw=0.8)
        ax.set_ylabel(label)
        ax.axvline(result.lock_started, color="k", ls=":", lw=0.8)
        ax.axvline(result.lock_started + result.lock_time, color="g", ls="--", lw=0.8)
    axes[0].axhline(result.t_max, color="r", ls="--", lw=0.8, label="calibrated maximum")
    axes[0].legend(loc="lower right")
    axes[0].set_title(f"PyRPL's FabryPerot lockbox on the simulated cavity: locked in {result.lock_time:.2f} s")
    axes[-1].set_xlabel("time [s] (dotted: lock() called, dashed: lock() returned)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def run_lock(args: argparse.Namespace) -> int:
    import pathlib
    import tempfile

    from .sim.plants import FabryPerot

    with contextlib.ExitStack() as stack:
        if args.host is not None:  # a running `rpl-noqt sim --plant fabry-perot` with default parameters
            host, port = args.host, args.port
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="rpl-noqt-lock-demo-"))
            config = pathlib.Path(folder) / "fabry_perot.yml"
            import yaml

            config.write_text(yaml.safe_dump(FabryPerot().pyrpl_config(), sort_keys=False))
        else:
            from .sim import Simulator

            sim = stack.enter_context(Simulator(plant="fabry-perot"))
            host, port, config = sim.host, sim.port, sim.pyrpl_config
            print(f"simulated Red Pitaya with a {sim.plant.describe()} on {host}:{port}")
        result = run_lock_demo(host, port, config, args.seconds)
    for name, (lo, hi) in result.calibration.items():
        print(f"calibration sweep: {name} from {lo:+.3f} V to {hi:+.3f} V")
    held = result.held(result.lock_time)
    print(f"lock(): {'locked' if result.locked else 'NOT locked'} in {result.lock_time:.2f} s; "
          f"transmission stayed >= {held:.1%} of its maximum for the following {args.seconds:g} s "
          f"({len(result.trace)} samples of transmission, error signal and piezo)")
    ok = result.locked and held > 0.9 and not result.errors
    for error in result.errors:
        print(f"ERROR {error}")
    if args.plot and result.trace:
        _plot_lock(result, args.plot)
        print(f"lock acquisition written to {args.plot}")
    print("lock demo OK" if ok else "lock demo FAILED")
    return 0 if ok else 1


def run(args: argparse.Namespace) -> int:
    _check(args)
    if args.lock:
        return run_lock(args)
    with _board(args) as (host, port):
        result = run_demo(host, port, args.frequency, args.amplitude, args.setpoint, args.seconds)
    ok = not result.errors and bool(result.scope_fits) and bool(result.pid_trace)
    if result.scope_fits:
        last = result.scope_fits[-1]
        ok &= result.frequency_error < 1e-3 and result.amplitude_error < 0.02
        print(f"ASG -> scope: {len(result.scope_fits)} curves; set {args.frequency:g} Hz / {args.amplitude:g} V, "
              f"measured {last.frequency:.3f} Hz / {last.amplitude:.4f} V "
              f"(worst errors {result.frequency_error:.2e} in frequency, {result.amplitude_error:.2%} in amplitude)")
    if result.pid_trace:
        ok &= abs(result.settled - args.setpoint) < 0.01
        print(f"PID lock: setpoint {args.setpoint:g} V, in2 settled at {result.settled:.4f} V "
              f"({len(result.pid_trace)} sampler reads)")
    print(f"monitor: {result.sampler_reads} sampler reads from a third thread")
    for error in result.errors:
        print(f"ERROR {error}")
    if args.plot:
        _plot(result, args.plot)
        print(f"traces written to {args.plot}")
    print("demo OK" if ok else "demo FAILED")
    return 0 if ok else 1
