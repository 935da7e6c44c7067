"""Number formats and the phasor representation shared by the FPGA blocks.

The FPGA moves 14-bit two's-complement samples between blocks: full scale
(code 8191) is +1 V and code -8192 is -1 V.  Internally the simulator works in
volts (float64) and converts to codes only where a register or a scope buffer
exposes them, so rounding happens at the same places as on the board.

:class:`Spectrum` is the steady-state ("phasor") view of a signal: a DC value,
a list of tones and a white-noise level.  The IQ demodulator and the network
analyzer work on this view because it gives their low-pass filtered quadratures
exactly and cheaply, where a time-domain simulation would need millions of
125 MHz samples per point.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

try:  # the clip ufunc itself: np.clip's argument checks cost more than the clipping of a short array
    from numpy._core.umath import clip as _clip
except ImportError:  # pragma: no cover - numpy < 2
    from numpy.core.umath import clip as _clip

#: FPGA clock (Hz); every register counting "cycles" counts this clock.
FPGA_CLOCK_HZ = 125e6
#: one FPGA clock cycle (s)
CYCLE = 1.0 / FPGA_CLOCK_HZ
#: codes per volt of the 14-bit signal bus
CODES_PER_VOLT = 2**13
#: the largest positive sample (V), the smallest is -1.0
V_MAX = (2**13 - 1) / 2**13


def sat_volts(v: np.ndarray | float) -> np.ndarray:
    """Saturate like the 14-bit bus: [-1, 8191/8192] V."""
    return _clip(v, -1.0, V_MAX)


def volts_to_code(v: np.ndarray | float) -> np.ndarray:
    """Volts -> unsigned 14-bit register code (two's complement in 14 bits).

    One new float array, rounded and clipped in place (a scope trace: 2 x 2^14
    samples per curve, five temporaries before)."""
    c = np.multiply(v, float(CODES_PER_VOLT), out=np.empty(np.shape(v)))
    np.rint(c, out=c)
    _clip(c, -8192.0, 8191.0, out=c)
    codes = c.astype(np.int32)
    np.bitwise_and(codes, 0x3FFF, out=codes)
    return codes.view(np.uint32)


def signed(value: int, bits: int) -> int:
    """Interpret the low ``bits`` of ``value`` as two's complement."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def to_unsigned(value: int, bits: int) -> int:
    """Two's complement encoding of ``value`` in ``bits`` bits."""
    return int(value) & ((1 << bits) - 1)


def code_to_volts(code: int, bits: int = 14) -> float:
    """Signed ``bits``-bit code -> volts (2**13 codes per volt)."""
    return signed(code, bits) / CODES_PER_VOLT


@dataclass
class Spectrum:
    """Steady-state description ``x(t) = dc + sum Re(amp_k exp(2j pi f_k t)) + noise``.

    ``t`` is absolute model time (s).  ``noise`` is the rms of white noise over
    the full 62.5 MHz band.
    """

    dc: float = 0.0
    freqs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    amps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=complex))
    noise: float = 0.0

    @classmethod
    def empty(cls) -> Spectrum:
        return cls()

    def copy(self) -> Spectrum:
        """An independent copy (callers add to ``dc`` in place: a kept spectrum is handed out as one)."""
        return Spectrum(self.dc, self.freqs.copy(), self.amps.copy(), self.noise)

    def scaled(self, gain: complex | float) -> Spectrum:
        """Multiply by a real gain (complex gains rotate tones, DC uses the real part)."""
        return Spectrum(
            dc=float(np.real(gain)) * self.dc,
            freqs=self.freqs.copy(),
            amps=self.amps * gain,
            noise=abs(gain) * self.noise,
        )

    def delayed(self, delay: float) -> Spectrum:
        """Delay by ``delay`` seconds (phase lag on every tone)."""
        if delay == 0 or len(self.freqs) == 0:
            return self
        return Spectrum(
            self.dc, self.freqs.copy(), self.amps * np.exp(-2j * np.pi * self.freqs * delay), self.noise
        )

    def filtered(self, response) -> Spectrum:  # response: callable f -> complex
        """Apply a linear filter given as a complex frequency response."""
        dc_gain = complex(response(np.array([0.0]))[0])
        amps = self.amps * response(self.freqs) if len(self.freqs) else self.amps
        return Spectrum(self.dc * dc_gain.real, self.freqs.copy(), amps, self.noise)

    def __add__(self, other: Spectrum) -> Spectrum:
        return Spectrum(
            self.dc + other.dc,
            np.concatenate([self.freqs, other.freqs]),
            np.concatenate([self.amps, other.amps]),
            float(np.hypot(self.noise, other.noise)),
        )

    def evaluate(self, t: np.ndarray, rng: np.random.Generator | None = None, noise_scale: float = 1.0, *,
                 grid: tuple[float, float] | None = None) -> np.ndarray:
        """Time-domain samples at times ``t`` (noise drawn from ``rng``).

        ``grid=(a, b)``: the caller made ``t = a + k b`` (see :func:`grid_phasor_sum`).
        """
        t = np.asarray(t, dtype=float)
        out = np.full(t.shape, self.dc, dtype=float)
        if len(self.freqs):
            out += phasor_sum(t, 2 * np.pi * np.asarray(self.freqs, dtype=float), self.amps, grid=grid, real=True)
        if self.noise and rng is not None:
            out += rng.normal(0.0, self.noise * noise_scale, size=t.shape)
        return out


#: below this many time x tone products a plain outer product is cheapest
_SMALL_PHASOR_WORK = 8192
#: arrays of one repeated time up to this long are summed once (:func:`phasor_sum`)
_CONSTANT_MAX = 4096
#: time x tone products per slice of a direct (off-grid) sum: bounds its temporary arrays
_DIRECT_SLICE = 2**16


#: what the tones left out of a time-domain sum may add up to at most (V): a thousandth of a
#: 14-bit code (:func:`significant`)
NEGLIGIBLE_VOLTS = 1e-3 / CODES_PER_VOLT


def significant(coefs: np.ndarray, budget: float = NEGLIGIBLE_VOLTS) -> np.ndarray:
    """Mask of the tones to sum: all but the smallest, whose amplitudes together stay within
    ``budget`` (so the sum moves by at most that much).  A generator's table makes dozens
    of quantisation spurs of microvolts; a correction term (a tone's part that a filter or
    an average takes away) is tiny for every slow tone: each costs a pass over the times."""
    mags = np.abs(np.asarray(coefs))
    keep = mags > 0
    if not len(mags):
        return keep
    order = np.argsort(mags, kind="stable")
    dropped = int(np.searchsorted(np.cumsum(mags[order]), budget, side="right"))
    keep[order[:dropped]] = False
    return keep


def phasor_sum(t: np.ndarray, omegas: np.ndarray, coefs: np.ndarray, *,
               grid: tuple[float, float] | None = None, real: bool = False) -> np.ndarray:
    """``sum_j coefs[j] * exp(1j * omegas[j] * t)`` (its real part with ``real``), shape of ``t``.

    On a grid :func:`grid_phasor_sum`; otherwise one outer product of phases
    and one matrix product per slice of times, instead of a Python loop over
    the tones (66 tones for one sampler read: 0.2 ms of loop overhead).  The
    real part comes from real cosines and sines (a vectorised real ``cos``
    costs a tenth of a complex ``exp``).
    """
    t = np.asarray(t, dtype=float)
    omegas = np.asarray(omegas, dtype=float).ravel()
    coefs = np.asarray(coefs, dtype=complex).ravel()
    key = None
    if t.size >= _MEMO_MIN and omegas.size:
        key = (omegas.tobytes(), coefs.tobytes(), real, grid)
        found = _memo_get(t, key)
        if found is not None:
            return found
    fast = grid_phasor_sum(t, omegas, coefs, grid=grid, real=real)
    if fast is not None:
        if key is not None:
            _memo_put(t, key, fast)
        return fast
    flat = t.ravel()
    out = np.empty(flat.size, dtype=float if real else complex)
    if omegas.size == 0:
        out[:] = 0.0
        return out.reshape(t.shape)
    if 1 < flat.size <= _CONSTANT_MAX and flat[0] == flat[-1] and (flat == flat[0]).all():
        # one instant, many times (a PID's feedback table forces its output over a grid at one time)
        out[:] = phasor_sum(flat[:1], omegas, coefs, real=real)[0]
        return out.reshape(t.shape)
    step = max(1, _DIRECT_SLICE // omegas.size)
    for start in range(0, flat.size, step):
        phase = np.multiply.outer(flat[start:start + step], omegas)
        if real:  # Re(c e^{i x}) = Re(c) cos x - Im(c) sin x
            out[start:start + step] = dot(np.cos(phase), coefs.real) - dot(np.sin(phase), coefs.imag)
        else:
            out[start:start + step] = dot(np.exp(1j * phase), coefs)
    return out.reshape(t.shape)


#: sums over at least this many times are remembered (:func:`_memo_get`)
_MEMO_MIN = 4096
#: the last few long sums: ``(times, probe, key, result)``
_memo: list[tuple[np.ndarray, tuple[float, float, float], tuple[Any, ...], np.ndarray]] = []
_MEMO_SIZE = 4


def _probe(t: np.ndarray) -> tuple[float, float, float]:
    flat = t.reshape(-1)
    return float(flat[0]), float(flat[flat.size // 2]), float(flat[-1])


def _memo_get(t: np.ndarray, key: tuple[Any, ...]) -> np.ndarray | None:
    """A copy of the sum of the same tones over the same time array, if it was just computed.

    One evaluation often sums the same tones at the same times twice: a plant's
    drive through a PID reached once directly and once inside the PID's own
    loop, the scope's two channels through one cavity.  The array object is
    held (its id cannot be reused) and three of its values compared (an array
    written in place since is not taken for the same); a copy is returned, as
    callers add to their result in place.
    """
    for entry in _memo:  # another thread may replace the list: iterate the one read
        if entry[0] is t and entry[2] == key and entry[1] == _probe(t):
            return entry[3].copy()
    return None


def _memo_put(t: np.ndarray, key: tuple[Any, ...], result: np.ndarray) -> None:
    global _memo
    _memo = [(t, _probe(t), key, result.copy()), *_memo[:_MEMO_SIZE - 1]]


def grid_phasor_sum(t: np.ndarray, omegas: np.ndarray, coefs: np.ndarray, *,
                    grid: tuple[float, float] | None = None, real: bool = False) -> np.ndarray | None:
    """``sum_j coefs[j] * exp(1j * omegas[j] * t)`` (complex, shape of ``t``) for times on a grid; else None.

    ``real``: only the real part (float): the final product is then a real one
    of half the work.

    The sum over tones that the phasor view needs everywhere, without a
    Python loop over tones, for times on a regular grid: ``t = a + k b``
    (scope samples, one sample per FPGA cycle) or ``a + k b + i c`` with ``i``
    the fastest index (the scope's sub-samples for averaging).  The phase is
    factorised, ``exp(i w t) = exp(i w (a + B h b)) exp(i w l b) exp(i w i c)``
    with ``k = B h + l``; the factors for ``h`` and ``l`` are powers, built by
    doubling from ``O(log K)`` rows of exponentials (:func:`_powers`), and
    the sum over the ``J`` tones is one matrix product (a Python loop over 70
    tones of a 2^20-cycle window took seconds).  The factors equal
    ``exp(i w t)`` up to float rounding, of the order of the rounding of
    ``w t`` itself.  Returns None for few times or tones (the caller's loop is
    as fast) and for times off a grid.  ``grid=(a, b)``: the caller built
    ``t = a + k b`` itself (per-cycle windows of a million cycles), so it is
    not checked.
    """
    t = np.asarray(t, dtype=float)
    omegas = np.asarray(omegas, dtype=float).ravel()
    flat = t.ravel()
    n, tones = flat.size, omegas.size
    if tones == 0 or n < 64 or n * tones <= _SMALL_PHASOR_WORK:
        return None
    found = (grid[0], grid[1], n, 0.0, 1) if grid is not None else _grid_of(t, flat)
    if found is None:
        return None
    return _grid_sum(found, omegas, np.asarray(coefs, dtype=complex).ravel(), real).reshape(t.shape)


#: the last array whose grid was found, with the answer: one evaluation passes the same time
#: array to many phasor sums (a plant's drive, its disturbance, its beat), and finding the grid
#: of 2^17 scope sub-samples costs a millisecond each time
_last_grid: tuple[Any, tuple[float, float, float], tuple[float, float, int, float, int] | None] | None = None


def _grid_of(t: np.ndarray, flat: np.ndarray) -> tuple[float, float, int, float, int] | None:
    """:func:`_grid` of ``flat`` (a view of ``t``), remembered for the same array object.

    The object is held, so its id cannot be reused; three of its values are
    compared, so an array written in place since is not taken for the same.
    """
    global _last_grid
    probe = (float(flat[0]), float(flat[flat.size // 2]), float(flat[-1]))
    last = _last_grid  # one read: another thread may replace it
    if last is not None and last[0] is t and last[1] == probe:
        return last[2]
    found = _grid(flat)
    _last_grid = (t, probe, found)
    return found


def _grid(flat: np.ndarray) -> tuple[float, float, int, float, int] | None:
    """``(a, b, K, c, m)`` with ``flat[k m + i] == a + k b + i c`` (to rounding), or None."""
    n = flat.size
    d = np.diff(flat)
    scale = 4 * np.finfo(float).eps * max(abs(float(flat[0])), abs(float(flat[-1])), 1e-300)
    c = float(d[0])
    off = np.flatnonzero(np.abs(d - c) > scale + 1e-9 * abs(c))
    a = float(flat[0])
    if not len(off):  # one progression
        m, kk, c = 1, n, 0.0
        b = (float(flat[-1]) - a) / (n - 1)
    else:
        m = int(off[0]) + 1
        if m < 2 or n % m or n // m < 2:
            return None
        kk = n // m
        b = (float(flat[(kk - 1) * m]) - a) / (kk - 1)
        c = (float(flat[m - 1]) - a) / (m - 1)
    ideal = (a + np.arange(kk)[:, None] * b + np.arange(m)[None, :] * c).ravel()
    if np.max(np.abs(flat - ideal)) > 4 * scale + 1e-9 * (abs(b) + abs(c) * m):
        return None
    return a, b, kk, c, m


def _powers(omegas: np.ndarray, step: float, count: int) -> np.ndarray:
    """``exp(1j * omegas * step * k)`` for ``k < count`` (rows), by doubling.

    Row blocks ``[n, 2n)`` are rows ``[0, n)`` times ``exp(1j * omegas * step * n)``,
    which is computed directly: ``log2(count)`` rows of exponentials instead of
    ``count`` (a complex exponential costs about 50 ns, a product 1 ns), and
    every entry is a product of at most ``log2(count)`` exact ones, so it is
    within a few float roundings of ``exp(1j * omegas * step * k)``.
    """
    out = np.empty((count, omegas.size), dtype=complex)
    out[0] = 1.0
    filled = 1
    while filled < count:
        take = min(filled, count - filled)
        np.multiply(out[:take], np.exp(1j * (omegas * (step * filled))), out=out[filled:filled + take])
        filled += take
    return out


def _grid_sum(grid: tuple[float, float, int, float, int], omegas: np.ndarray, coefs: np.ndarray,
              real: bool = False) -> np.ndarray:
    a, b, kk, c, m = grid
    block = max(1, int(np.sqrt(kk * max(1, m))) // m)  # about sqrt(n) columns per product
    blocks = -(-kk // block)
    hi = _powers(omegas, block * b, blocks)  # blocks x J
    hi *= np.exp(1j * omegas * a) * coefs
    lo = _powers(omegas, b, block)  # block x J
    if m > 1:
        inner = _powers(omegas, c, m)  # m x J
        lo = (lo[:, None, :] * inner[None, :, :]).reshape(block * m, -1)
    if real:  # Re(h l) = Re(h) Re(l) - Im(h) Im(l): one real product over 2 J
        z = dot(np.concatenate([hi.real, -hi.imag], axis=1), np.concatenate([lo.real, lo.imag], axis=1).T)
    else:
        z = dot(hi, lo.T)  # blocks x (block m)
    return z.reshape(blocks * block * m)[: kk * m]


def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` with BLAS held to the calling thread (:data:`one_blas_thread`).

    Every matrix product of the model goes through here: the products are
    small (a few hundred rows and columns) and gain little from a second
    thread, while on a 2-core machine a threaded product wakes OpenBLAS's
    worker, which then competes with the client and the server threads: in
    the bench's busy session single accesses took 20 to 140 ms instead of 5,
    and a 1-row product 7 ms under load.

    Products below :data:`BLAS_SINGLE_THREAD_WORK` multiply-adds go straight
    to BLAS: OpenBLAS runs them in the calling thread anyway (its threading
    thresholds: ``m * n`` of 2304 times 4 for a matrix-vector product, 65536
    times 4 for ``m * n * k`` of a matrix product), and most of the model's
    products are that small (a few times per access, behind a plant dozens),
    where the limit's two ctypes calls cost more than the product.
    """
    if a.size * (b.shape[-1] if b.ndim > 1 else 1) < BLAS_SINGLE_THREAD_WORK:
        return a @ b
    with one_blas_thread:
        return a @ b


#: multiply-adds below which a product is left to BLAS without the thread limit (:func:`dot`):
#: below OpenBLAS's smallest threading threshold (a matrix-vector product of 9216 elements)
BLAS_SINGLE_THREAD_WORK = 8192


class _OneBlasThread:
    """Context manager: BLAS runs in the calling thread while any thread is inside.

    Uses threadpoolctl when it is installed (it comes with scikit-learn and
    PyMoDAQ; without it, set ``OPENBLAS_NUM_THREADS=1`` for a simulator
    process).  OpenBLAS's limit is process-wide, so it is taken by the first
    thread to enter and given back by the last to leave (a counter under a
    lock): two simulators in one process do not restore each other's limit
    out of order.  About 2 us per product (a ctypes call each way; threadpoolctl's
    ``limit()`` context took 8 to 17 us).  threadpoolctl lets one live thread
    at a time set OpenBLAS's limit: while another thread holds that role the
    products keep BLAS's threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: list[tuple[Any, int]] = []
        self._blas: list[Any] | None = None

    def prepare(self) -> None:
        """Find the BLAS libraries now (a few ms, once per process) rather than in the first access."""
        with self._lock:
            self._libraries()

    def _libraries(self) -> list[Any]:
        if self._blas is None:
            try:
                from threadpoolctl import ThreadpoolController
                self._blas = list(ThreadpoolController().select(user_api="blas").lib_controllers)
            except Exception:  # not installed, or no introspectable BLAS: products keep BLAS's own threads
                log.debug("threadpoolctl unavailable: the simulator's matrix products use BLAS's threads")
                self._blas = []
        return self._blas

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                saved = []
                for lib in self._libraries():
                    try:
                        threads = lib.num_threads
                        if threads is not None and threads != 1:
                            lib.set_num_threads(1)
                            saved.append((lib, threads))
                    except Exception:  # pragma: no cover - a BLAS threadpoolctl cannot drive
                        log.debug("could not limit the threads of %s", lib, exc_info=True)
                self._saved = saved
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                saved, self._saved = self._saved, []
                for lib, threads in saved:
                    with contextlib.suppress(Exception):
                        lib.set_num_threads(threads)


#: held around every matrix product of the model (:func:`dot`)
one_blas_thread = _OneBlasThread()
