"""Real-time behaviour of the model: block reads across region boundaries, the
vectorised phasor sums, and the model's own compute time per access with every
module running (issue 13, part 4).

Time bounds are on the model's CPU time in the calling thread
(``time.thread_time``), which other load on the machine barely changes, and
are far above what the model needs (a few ms) and far below what it took
before (0.1 to 12 s), so they catch a regression without being timing-flaky.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("scipy.signal")  # imported here, not inside a timed access (1.4 s)

from rpl_noqt.sim import FpgaModel, ManualClock
from rpl_noqt.sim.pfd import _negative_cycles
from rpl_noqt.sim.plants import make_plant
from rpl_noqt.sim.signals import (
    CYCLE,
    NEGLIGIBLE_VOLTS,
    Spectrum,
    dot,
    grid_phasor_sum,
    one_blas_thread,
    phasor_sum,
    significant,
)

SCOPE = 0x40100000
ASG = 0x40200000
DSP = 0x40300000


def _cpu(func, *args):
    t0 = time.thread_time()
    result = func(*args)
    return result, time.thread_time() - t0


def _scope_running(m: FpgaModel, clock: ManualClock) -> None:
    m.write(SCOPE + 0x14, [1])  # decimation 1
    m.write(SCOPE + 0x10, [2**14])
    m.write(SCOPE, [1])
    m.write(SCOPE + 0x4, [1])  # software trigger
    clock.advance(1e-3)


@pytest.mark.parametrize("address, count", [
    (SCOPE + 0x10004, 2**14),      # ch1 from its second word: crosses into ch2 by one word (12.4 s before)
    (SCOPE + 0x1FFFC, 2),          # the last word of ch1, the first of ch2
    (SCOPE + 0xFFF8, 6),           # registers, then the start of ch1
    (SCOPE + 0x2FFFC, 3),          # the end of ch2 into what follows it (reads 0)
    (ASG + 0x1FFF8, 4),            # asg0's table into asg1's
])
def test_a_block_read_across_a_region_boundary_equals_its_words_and_is_fast(address, count):
    clock = ManualClock(1.0)
    m = FpgaModel(seed=3, clock=clock)
    m.set_loopback(1, noise=1e-3)
    m.write(ASG + 0x10000, np.arange(2**14) & 0x3FFF)
    m.write(ASG + 0x20000, (np.arange(2**14) * 3) & 0x3FFF)
    _scope_running(m, clock)
    block, cpu = _cpu(m.read, address, count)
    words = [m.read_word(address + 4 * i) for i in range(count)]
    assert list(block) == words
    assert cpu < 0.5, f"a {count}-word read took {cpu:.2f} s of CPU"


def test_a_write_across_the_end_of_an_asg_table_lands_in_both_tables():
    m = FpgaModel(seed=0, clock=ManualClock(1.0))
    m.write(ASG + 0x1FFF8, [1, 2, 3, 4])
    assert list(m.read(ASG + 0x1FFF8, 2)) == [1, 2]
    assert list(m.read(ASG + 0x20000, 2)) == [3, 4]


@pytest.mark.parametrize("shape", ["line", "grid", "irregular"])
def test_grid_phasor_sum_matches_the_tone_by_tone_sum(shape):
    rng = np.random.default_rng(0)
    omegas = 2 * np.pi * rng.uniform(0, 5e6, 70)
    coefs = rng.normal(size=70) + 1j * rng.normal(size=70)
    cycle = 8e-9
    if shape == "line":  # one sample per FPGA cycle, late in a long run
        t = (np.arange(123, 123 + 50_000) + 0.5) * cycle + 1000.0
    elif shape == "grid":  # the scope's averaging sub-samples
        t = (10.0 + (np.arange(4096)[:, None] + 1) * 64 * cycle - (np.arange(8)[None, :] + 0.5) * 8 * cycle).ravel()
    else:
        t = rng.uniform(0, 1, 4096)
    expected = np.zeros(t.shape, dtype=complex)
    for w, a in zip(omegas, coefs, strict=True):
        expected += a * np.exp(1j * w * t)
    fast = grid_phasor_sum(t, omegas, coefs)
    if shape == "irregular":
        assert fast is None  # the caller's loop
        return
    assert fast is not None
    # the phase of w t at t = 1000 s is only known to ~1e-6 rad in float64: either way
    assert np.max(np.abs(fast - expected)) < 1e-4 * np.sum(np.abs(coefs))
    # a spectrum evaluated on the grid agrees with the loop too
    s = Spectrum(dc=0.1, freqs=omegas / (2 * np.pi), amps=coefs)
    assert np.allclose(s.evaluate(t), 0.1 + expected.real, atol=1e-4 * np.sum(np.abs(coefs)))


def everything_running(noise: float = 0.0, decimation: int = 64, plant: str | None = None) -> tuple[FpgaModel, ManualClock]:
    """Both ASGs on the outputs, PIDs in and out of loops, an IQ demodulating,
    another sweeping as PyRPL's network analyzer does, the scope averaging
    in1 and the IQ's quadrature (decimation 64: 8.4 ms traces, 2^17 sub-samples
    through the IQ chain per buffer).

    Without input noise: with noise, traces up to 2^20 cycles also send the
    noise through the IQ chain cycle by cycle (``Iq._residual_zv``), about
    0.1 to 0.4 s per million cycles on a loaded 2-core machine, which this
    bound does not cover (docs/simulator.md, Speed)."""
    clock = ManualClock(100.0)
    m = FpgaModel(seed=11, clock=clock)
    for ch in (1, 2):
        m.set_loopback(ch, noise=noise)
    if plant is not None:
        m.attach_plant(make_plant(plant))
    sine = np.round(np.sin(2 * np.pi * np.arange(2**14) / 2**14) * 8191).astype(np.int64) & 0x3FFF
    m.write(ASG + 0x10000, sine)
    m.write(ASG + 0x20000, np.where(np.arange(2**14) < 2**13, 4000, (-4000) & 0x3FFF))
    m.write(ASG + 0x04, [0x1000])
    m.write(ASG + 0x24, [0x0800])
    m.write(ASG + 0x08, [2**30 - 1])
    m.write(ASG + 0x28, [2**30 - 1])
    m.write(ASG + 0x10, [int(1e3 / 125e6 * 2**30)])
    m.write(ASG + 0x30, [int(5e3 / 125e6 * 2**30)])
    m.write(ASG, [(1 << 16) | 1 | (1 << 20) | (1 << 4)])
    m.write(DSP + 0x80004, [1])  # asg0 -> out1
    m.write(DSP + 0x90004, [2])  # asg1 -> out2
    # pid0 in a loop through out1 -> in1, pid1 on in2, pid2 on pid0 (coupled), all integrating
    m.write(DSP + 0x00000, [10])
    m.write(DSP + 0x00108, [400])
    m.write(DSP + 0x0010C, [int(628 / 125e6 * 2**32)])
    m.write(DSP + 0x00004, [1])
    m.write(DSP + 0x10000, [11])
    m.write(DSP + 0x1010C, [int(63 / 125e6 * 2**32)])
    m.write(DSP + 0x20000, [0])
    m.write(DSP + 0x2010C, [int(190 / 125e6 * 2**32)])
    # iq1 demodulates in1 at 25 kHz; iq0 is the network analyzer, in1 -> out1
    m.write(DSP + 0x60000, [10])
    m.write(DSP + 0x60108, [int(25e3 / 125e6 * 2**32)])
    m.write(DSP + 0x60124, [(0x80 | 10) | ((0x80 | 10) << 8)])
    m.write(DSP + 0x60118, [1000])
    m.write(DSP + 0x50000, [10])
    m.write(DSP + 0x50114, [2**13])
    m.write(DSP + 0x50130, [12500])
    m.write(DSP + 0x50134, [100])
    m.write(DSP + 0x50004, [1])
    # the scope: in1 and iq1's quadrature, averaging
    m.write(DSP + 0x80000, [10])
    m.write(DSP + 0x90000, [6])
    m.write(SCOPE + 0x14, [decimation])
    m.write(SCOPE + 0x28, [1])
    m.write(SCOPE + 0x10, [2**13])
    return m, clock


def _busy_session(m: FpgaModel, clock: ManualClock) -> list[tuple[str, float]]:
    """What a busy PyRPL session asks, on the hand-stepped clock with realistic gaps:
    NA points, scope curves (registers and both buffers), PID and sampler reads.
    Returns ``(access, model CPU time)`` in order."""
    times: list[tuple[str, float]] = []

    def timed(label, func, *args):
        _, cpu = _cpu(func, *args)
        times.append((label, cpu))

    for point in range(12):
        timed("na freq write", m.write, DSP + 0x50108, [int((1e4 + 3e4 * point) / 125e6 * 2**32)])
        clock.advance(1.1e-4)
        timed("na sums read", m.read, DSP + 0x50140, 4)
        timed("scope reset", m.write, SCOPE, [2])
        timed("scope arm", m.write, SCOPE, [1])
        timed("scope trigger", m.write, SCOPE + 0x4, [1])
        clock.advance(0.003 * (1 + point % 3))
        timed("scope status", m.read_word, SCOPE)
        timed("scope wp_trig", m.read_word, SCOPE + 0x1C)
        timed("scope ch1", m.read, SCOPE + 0x10000, 2**14)
        timed("scope ch2", m.read, SCOPE + 0x20000, 2**14)
        for n in range(3):
            timed(f"pid{n} ival", m.read_word, DSP + 0x10000 * n + 0x100)
        timed("sampler iq1", m.read_word, DSP + 0x60010)
        clock.advance(0.05 * (point % 2))  # now and then a longer pause: up to 64 PID chunks at once
    return times


def test_no_access_costs_more_than_100_ms_with_every_module_running():
    """Each access's model CPU time, the least of three identical runs (the model is
    deterministic on a hand-stepped clock and a seed, so a run slowed down by other
    work on the machine is outvoted).  Before the vectorisation and the PID coupling
    analysis, single accesses of this session took 0.1 to 1.2 s of CPU (the per-tone
    loop through the IQ chain, every PID stepped in 64 chunks after each pause)."""
    runs = [_busy_session(*everything_running()) for _ in range(3)]
    labels = [label for label, _ in runs[0]]
    best = [min(run[i][1] for run in runs) for i in range(len(labels))]
    worst = sorted(zip(best, labels), reverse=True)
    assert worst[0][0] < 0.1, f"slowest accesses (model CPU s): {worst[:5]}"


def test_no_access_costs_more_than_100_ms_with_a_plant_behind_the_outputs():
    """The same session through the Fabry-Perot plant (drift, acoustic noise, the EOM driven by
    asg1's square wave: 22 sideband pairs), pid1 also driving out2 so that pid0 and pid1 reach
    each other through the plant, the scope reading the cavity (in1) and iq1's quadrature.
    Before, each access stepped the coupled PIDs in up to 64 chunks through the plant (about
    0.5 s) and a scope trace through the cavity took seconds."""
    runs = []
    for _ in range(3):
        m, clock = everything_running(plant="fabry-perot")
        m.write(DSP + 0x10004, [2])  # pid1 -> out2
        runs.append(_busy_session(m, clock))
    labels = [label for label, _ in runs[0]]
    best = [min(run[i][1] for run in runs) for i in range(len(labels))]
    worst = sorted(zip(best, labels), reverse=True)
    assert worst[0][0] < 0.1, f"slowest accesses (model CPU s): {worst[:5]}"


@pytest.mark.parametrize("real", [True, False])
def test_phasor_sum_off_the_grid_matches_the_tone_by_tone_sum(real):
    rng = np.random.default_rng(1)
    omegas = 2 * np.pi * rng.uniform(0, 5e6, 66)
    coefs = rng.normal(size=66) + 1j * rng.normal(size=66)
    for t in (np.array([12.5]), rng.uniform(0, 1, 3000)):  # one sampler time; irregular times, in slices
        expected = np.zeros(t.shape, dtype=complex)
        for w, a in zip(omegas, coefs, strict=True):
            expected += a * np.exp(1j * w * t)
        got = phasor_sum(t, omegas, coefs, real=real)
        assert got.shape == t.shape
        assert np.allclose(got, expected.real if real else expected, atol=1e-9 * np.sum(np.abs(coefs)))


def test_the_pfd_sign_bits_equal_those_of_every_tone_at_every_cycle():
    """The first pass leaves out the small tones; cycles they could flip are evaluated again
    with every tone, so the result is what the full evaluation gives.  The small tones
    here sum to 3 codes, so many cycles need the second look (fails without it)."""
    rng = np.random.default_rng(2)
    small = rng.uniform(0.5, 1.5, 40)
    small *= 3 / 2**13 / small.sum()
    freqs = np.concatenate([[1e3, 3.1e5, 2.2e6], rng.uniform(1e5, 20e6, 40)])
    mags = np.concatenate([[0.5, 0.06, 0.01], small])
    s = Spectrum(dc=-2e-5, freqs=freqs, amps=mags * np.exp(1j * rng.uniform(0, 2 * np.pi, len(mags))))
    refined = 0
    for first in (0, 10**9, 10**9 + 123_457, 3 * 10**9):
        count = 2**16 + 1
        t = np.arange(first, first + count) * CYCLE
        full = np.round(s.evaluate(t, grid=(first * CYCLE, CYCLE)) * 2.0**13) < 0
        got = _negative_cycles(s, first, count)
        assert np.array_equal(got, full)
        big = Spectrum(dc=s.dc, freqs=freqs[:3], amps=s.amps[:3]).evaluate(t, grid=(first * CYCLE, CYCLE))
        refined += int(np.sum((np.round(big * 2.0**13) < 0) != full))
    assert refined > 0  # the small tones did flip cycles: the second look was needed


def test_one_blas_thread_is_restored_by_the_last_to_leave():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    blas = threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers
    if not blas:
        pytest.skip("no BLAS threadpoolctl can drive")
    before = [lib.num_threads for lib in blas]
    with one_blas_thread:
        with one_blas_thread:
            assert all(lib.num_threads == 1 for lib in blas)
        assert all(lib.num_threads == 1 for lib in blas)
    assert [lib.num_threads for lib in blas] == before
    a = np.arange(12.0).reshape(3, 4)
    assert np.array_equal(dot(a, a.T), a @ a.T)


def test_write_word_is_a_write_of_one_word():
    """The server's one-word writes go through FpgaModel.write_word (no array): the same model
    history as write() for every region (PIDs moving, scope, ASG table word, DIO0_P driven by hk)."""
    models = []
    for one in (False, True):
        clock = ManualClock(5.0)
        m = FpgaModel(seed=4, clock=clock)
        w = (lambda a, v, m=m: m.write_word(a, v)) if one else (lambda a, v, m=m: m.write(a, [v]))
        m.write(ASG + 0x10000, (np.arange(2**14) * 4) & 0x3FFF)  # a sawtooth in asg0's table
        for address, value in ((SCOPE + 0x14, 64), (SCOPE, 1),  # acquiring in1 (the cable from out1) throughout
                               (DSP + 0x00000, 10), (DSP + 0x00108, 400), (DSP + 0x0010C, int(628 / 125e6 * 2**32)),
                               (DSP + 0x00004, 1), (ASG + 0x10000 + 4 * 7, 1234), (ASG + 0x04, 0x1000),
                               (ASG + 0x08, 2**30 - 1), (ASG + 0x10, int(1e4 / 125e6 * 2**30)), (ASG, 0x11),
                               (DSP + 0x80004, 1), (ASG + 0x04, 0x0800), (DSP + 0x00004, 0),
                               (0x40000010, 1), (0x40000018, 1)):  # hk: DIO0_P an output, driven high
            w(address, value)
            clock.advance(1e-4)
        clock.advance(2e-3)
        models.append([m.read(SCOPE + 0x10000, 2**14), m.read(ASG + 0x10000, 16),
                       [m.read_word(a) for a in (DSP + 0x100, DSP + 0x10, 0x40000020, SCOPE + 0x1C, 0x40000018)]])
    for a, b in zip(*models, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert models[0][1][7] == 1234
    assert models[0][2][0] != 0  # pid0 integrated
    assert np.count_nonzero(models[0][0]) > 1000  # the scope saw the generator


def test_significant_leaves_out_only_tones_that_together_stay_within_the_budget():
    """``significant`` drops the smallest tones while their amplitudes add up to at most the
    budget (a thousandth of a code by default): the sum over the kept tones is within
    that of the full sum everywhere, and a tone above the budget is always kept."""
    rng = np.random.default_rng(5)
    spurs = rng.uniform(0.5, 1.5, 60) * 1e-9 * np.exp(1j * rng.uniform(0, 2 * np.pi, 60))  # 6e-8 V together
    big = np.array([0.3, 2e-4j, NEGLIGIBLE_VOLTS * 1.01])
    coefs = np.concatenate([spurs[:30], big, spurs[30:]])
    omegas = 2 * np.pi * rng.uniform(1e3, 5e6, len(coefs))
    for budget in (NEGLIGIBLE_VOLTS, 1e-5, 0.0):
        keep = significant(coefs, budget)
        dropped = np.abs(coefs[~keep])
        assert dropped.sum() <= budget
        if budget == NEGLIGIBLE_VOLTS:
            assert keep[30:33].all() and not keep[:30].any() and not keep[33:].any()  # every spur, no tone
        if len(dropped):
            assert dropped.max() <= np.abs(coefs[keep]).min()
        t = 1.0 + np.arange(4096) * 8e-9 * 37
        full = phasor_sum(t, omegas, coefs, real=True)
        kept = phasor_sum(t, omegas[keep], coefs[keep], real=True)
        assert np.max(np.abs(full - kept)) <= budget + 1e-15
    assert significant(coefs).sum() < len(coefs)  # the default budget does leave spurs out
    assert significant(coefs, 0.0).all()
    assert len(significant(np.zeros(0, dtype=complex))) == 0
