"""How the model steps PID integrators that other moving PIDs reach (issue 13, part 4).

A reference integrates the same registers with explicit Euler on a fine grid
(20-50 us), evaluating every PID's error through the model's own routing at
the integrators' present values at each step (``EvalContext.ivals``): no
tables, no ordering, no chunks.  The model, accessed every 1 ms to 0.3 s,
must follow it within its own step resolution (implicit Euler steps of at most
1 ms) and must not depend on how often it is accessed.

Before (chunked stepping: coupled PIDs alternated in up to 64 chunks per
access), the two PIDs summed on one DAC ended 0.12 V apart after 0.3 s
depending on whether the model was accessed every millisecond or every 0.3 s,
and through a plant each access cost about 0.5 s.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from rpl_noqt.sim import FpgaModel, ManualClock
from rpl_noqt.sim.dsp import EvalContext
from rpl_noqt.sim.pid import IVAL_MAX
from rpl_noqt.sim.plants import make_plant

DSP = 0x40300000
CHECKPOINTS = (0.01, 0.03, 0.1, 0.3)


def dsp(slot: int, offset: int) -> int:
    return DSP + 0x10000 * slot + offset


def _rate(per_second: float) -> int:
    return round(per_second / 125e6 * 2**32) & 0xFFFFFF


def _gain(p: float) -> int:
    return round(p * 2**12) & 0xFFFFFF


def _code(volts: float) -> int:
    return round(volts * 2**13) & 0x3FFF


#: register settings of two PIDs that the routing couples
CONFIGS = {
    # pid0 in1 -> out2, pid1 in2 -> out1 over the cables: each PID's output is the other's input
    "cross": [(dsp(0, 0), 10), (dsp(0, 4), 2), (dsp(0, 0x104), _code(0.1)), (dsp(0, 0x10C), _rate(-150)),
              (dsp(0, 0x108), _gain(-0.3)),
              (dsp(1, 0), 11), (dsp(1, 4), 1), (dsp(1, 0x104), _code(-0.2)), (dsp(1, 0x10C), _rate(100)),
              (dsp(1, 0x108), _gain(0.2))],
    # both on out1, both reading in1 with different setpoints: they fight, the integrators run
    # to their rails, the DAC sum and the output clamps make the coupling nonlinear
    "sum": [(dsp(0, 0), 10), (dsp(0, 4), 1), (dsp(0, 0x104), _code(0.2)), (dsp(0, 0x10C), _rate(-200)),
            (dsp(1, 0), 10), (dsp(1, 4), 1), (dsp(1, 0x104), _code(0.1)), (dsp(1, 0x10C), _rate(-50))],
    # pid0 in a loop through the cable; pid1 listens to in1 only (downstream: stepped after pid0)
    "chain": [(dsp(0, 0), 10), (dsp(0, 4), 1), (dsp(0, 0x104), _code(0.3)), (dsp(0, 0x10C), _rate(-300)),
              (dsp(1, 0), 10), (dsp(1, 4), 0), (dsp(1, 0x104), _code(0.1)), (dsp(1, 0x10C), _rate(100))],
    # the Fabry-Perot: pid0 holds the reflection at half its depth with the piezo (side of fringe),
    # pid1 integrates the transmission onto out2 (the EOM: its DC does not modulate, but the
    # routing makes each PID reach the other through the plant)
    "fabry-perot": [(dsp(0, 0), 11), (dsp(0, 4), 1), (dsp(0, 0x104), _code(0.35)), (dsp(0, 0x10C), _rate(40)),
                    (dsp(1, 0), 10), (dsp(1, 4), 2), (dsp(1, 0x104), _code(0.3)), (dsp(1, 0x10C), _rate(-20)),
                    (dsp(1, 0x108), _gain(0.2))],
}
#: the reference's step (s): rate x step <= 0.01 for every config
REFERENCE_STEP = {"cross": 2e-5, "sum": 2e-5, "chain": 2e-5, "fabry-perot": 5e-5}


def _build(config: str) -> tuple[FpgaModel, ManualClock]:
    clock = ManualClock(10.0)
    m = FpgaModel(seed=0, clock=clock)
    if config == "fabry-perot":
        m.attach_plant(make_plant("fabry-perot", drift=0.0, acoustic=0.0, detuning=-3.0))
    for address, value in CONFIGS[config]:
        m.write(address, [value])
    return m, clock


@functools.cache
def _reference(config: str, until: float) -> dict[float, tuple[float, float]]:
    """Both integrators at the checkpoints up to ``until``, explicit Euler on a fine grid
    through the model's routing (every error evaluated at the present integrators)."""
    m, clock = _build(config)
    pids = [m.bus.blocks[0], m.bus.blocks[1]]
    dt = REFERENCE_STEP[config]
    marks = {round(c / dt): c for c in CHECKPOINTS if c <= until + 1e-12}
    out: dict[float, tuple[float, float]] = {}
    with m.lock, clock.held():
        t0 = clock.now()
        rates = [p.i_rate for p in pids]
        v = [p.ival for p in pids]
        for k in range(1, max(marks) + 1):
            ctx = EvalContext(None, 0.0)
            ctx.ivals.update({0: v[0], 1: v[1]})
            t = np.array([t0 + (k - 1) * dt])
            errors = [float(p.error(t, ctx)[0]) for p in pids]
            v = [min(max(v[i] + rates[i] * dt * errors[i], -4.0), IVAL_MAX) for i in range(2)]
            if k in marks:
                out[marks[k]] = (v[0], v[1])
    return out


def _stepped(config: str, interval: float) -> dict[float, tuple[float, float]]:
    """Both integrators at the checkpoints, the model accessed every ``interval``."""
    m, clock = _build(config)
    out: dict[float, tuple[float, float]] = {}
    t = 0.0
    for mark in CHECKPOINTS:
        while t < mark - 1e-12:
            step = min(interval, mark - t)
            clock.advance(step)
            t += step
            m.advance()
        out[mark] = (m.bus.blocks[0].ival, m.bus.blocks[1].ival)
    return out


@pytest.mark.parametrize("interval", [1e-3, 0.05, 0.3])
@pytest.mark.parametrize(("config", "until", "atol", "rtol"), [
    ("cross", 0.3, 0.02, 0.0),
    ("chain", 0.3, 0.01, 0.03),
    ("fabry-perot", 0.1, 0.005, 0.0),
    # one 1 ms implicit step is a quarter of the fight's 4 ms time constant: a few per cent
    # of the early transient stay in the integrators' difference
    ("sum", 0.1, 0.01, 0.05),
])
def test_coupled_pids_follow_a_fine_step_reference(config, until, atol, rtol, interval):
    reference = _reference(config, until)
    got = _stepped(config, interval)
    for mark, expected in reference.items():
        for n in (0, 1):
            assert got[mark][n] == pytest.approx(expected[n], abs=atol + rtol * abs(expected[n])), \
                (config, interval, mark, n, got[mark], expected)


@pytest.mark.parametrize("config", ["cross", "sum", "chain", "fabry-perot"])
def test_stepping_does_not_depend_on_how_often_the_model_is_accessed(config):
    """1 ms against 0.3 s between accesses, to 1 mV over 0.3 s (the chunked stepping
    differed by 0.12 V on 'sum': with few chunks per access the slower integrator saw
    the faster one's trajectory late)."""
    often, rarely = _stepped(config, 1e-3), _stepped(config, 0.3)
    for mark in CHECKPOINTS:
        assert often[mark] == pytest.approx(rarely[mark], abs=1e-3), (mark, often[mark], rarely[mark])


@pytest.mark.parametrize("config", ["cross", "sum", "fabry-perot"])
def test_a_long_gap_between_accesses_is_stable(config):
    """One access after 20 s lands where 2000 accesses 10 ms apart do (implicit steps
    of 78 ms for the own loops; the coupling through the other integrator lags one step)."""
    once, _ = _build(config)
    often, clock_often = _build(config)
    once.clock.advance(20.0)  # type: ignore[attr-defined]
    once.advance()
    for _ in range(2000):
        clock_often.advance(0.01)
        often.advance()
    for n in (0, 1):
        a, b = once.bus.blocks[n].ival, often.bus.blocks[n].ival
        assert np.isfinite(a) and -4.0 <= a <= IVAL_MAX
        assert a == pytest.approx(b, abs=2e-3), (n, a, b)


def test_upstream_pids_are_stepped_first_and_mutual_ones_together():
    """The order the model steps PIDs in follows the routing: a PID another one reaches
    comes after it (alone, on its trajectory); PIDs that reach each other form one group."""
    m, _ = _build("chain")
    assert [([p.number for p in g], [q.number for q in up]) for g, up in m._active_pids()[2]] == [([0], []), ([1], [0])]
    m, _ = _build("cross")
    assert [[p.number for p in g] for g, _ in m._active_pids()[2]] == [[0, 1]]  # fastest first
    m, _ = _build("fabry-perot")  # through a plant every DAC reaches every ADC
    assert [[p.number for p in g] for g, _ in m._active_pids()[2]] == [[0, 1]]
    m.write(dsp(1, 4), [0])  # pid1 drives nothing: it only listens
    assert [[p.number for p in g] for g, _ in m._active_pids()[2]] == [[0], [1]]


@pytest.mark.parametrize("ival, railed", [(3.0, True), (-3.0, True), (0.05, False), (0.55, False)])
def test_a_pid_held_on_a_rail_by_its_integrator_skips_its_input_exactly(ival, railed):
    """A PID whose integrator alone keeps its output on a rail whatever the error (the
    error is within 2 V on the bus) is not evaluated through its input
    (``Pid._railed``): the output is the same as with the evaluation, and where
    ``p * error`` could reach back off the rail the evaluation still happens."""
    clock = ManualClock(1.0)
    m = FpgaModel(seed=0, clock=clock)
    m.attach_plant(make_plant("fabry-perot"))
    for address, value in ((dsp(0, 0x0), 10), (dsp(0, 0x4), 1),  # pid0: in1 -> out1, through the cavity
                           (dsp(0, 0x108), _gain(0.2)), (dsp(0, 0x128), _code(0.6)), (dsp(0, 0x124), _code(-0.6)),
                           (dsp(0, 0x100), round(ival * 2**13) & 0xFFFF)):  # the integrator: 16 bits
        m.write_word(address, value)
    clock.advance(1e-3)
    pid = m.bus.blocks[0]
    t = 1.001 + np.arange(64) * 1e-6
    calls = []
    original = pid.error

    def counted(times, ctx):
        calls.append(len(times))
        return original(times, ctx)

    pid.error = counted
    assert pid.ival == pytest.approx(ival, abs=2e-4)
    with m.lock, clock.held():
        fast = pid.output_signal(t, EvalContext(None, 0.0))
        assert (len(calls) == 0) is railed
        pid._railed = lambda ival, p: None
        full = pid.output_signal(t, EvalContext(None, 0.0))
        del pid._railed  # the class's own again
    assert calls  # the full evaluation went through the input
    np.testing.assert_array_equal(fast, full)
    if railed:
        assert np.all(full == full[0]) and full[0] == pytest.approx(0.6 if ival > 0 else -0.6, abs=2e-4)
    asked = []
    original_spectrum = m.bus.input_spectrum
    m.bus.input_spectrum = lambda *args: asked.append(args) or original_spectrum(*args)
    with m.lock, clock.held():  # the phasor view agrees: a railed output passes nothing of its input
        view = m.bus.blocks[0].signal_spectrum(EvalContext(None, 0.0))
    assert (len(asked) == 0) is railed
    if railed:
        assert view.dc == full[0] and len(view.freqs) == 0 and view.noise == 0.0
