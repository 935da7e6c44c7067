"""The cascaded first-order filters of ``red_pitaya_filter_block.v``.

Each stage is ``red_pitaya_lpf_block.v``: ``y += (x - y) << shift`` with the
result taken ``MAXSHIFT`` bits down, i.e. a discrete one-pole low-pass with
``alpha = 2**shift / 2**MAXSHIFT`` and one extra cycle of delay on the
difference.  A highpass stage outputs the difference ``x - y``.  The register
holds one byte per stage: bits 0..SHIFTBITS-1 the shift, bit 6 highpass,
bit 7 on.  We compute the exact discrete frequency response so that the
bandwidths PyRPL computes from the same register (``attributes.FilterRegister``)
are reproduced to within PyRPL's own empirical correction factors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .signals import FPGA_CLOCK_HZ


def clog2(x: float) -> int:
    """``CLOG2`` of red_pitaya_lpf_block.v (number of bits to hold ``x``)."""
    if x < 2:
        return 1
    return int(np.floor(np.log2(float(x)))) + 1


@dataclass(frozen=True)
class FilterParams:
    """Synthesis parameters of one filter bank (read back at 0x220..0x228 or 0x230..0x238)."""

    stages: int
    shiftbits: int
    minbw: int

    @property
    def maxshift(self) -> int:
        return clog2(FPGA_CLOCK_HZ / self.minbw)


def stage_settings(setting: int, params: FilterParams) -> list[tuple[float, bool]]:
    """Decode a filter register into ``[(alpha, highpass), ...]`` for the active stages."""
    out = []
    for j in range(params.stages):
        byte = (setting >> (8 * j)) & 0xFF
        if not byte & 0x80:
            continue
        shift = min(byte & ((1 << params.shiftbits) - 1), params.maxshift)
        alpha = 2.0**shift / 2.0**params.maxshift
        out.append((alpha, bool(byte & 0x40)))
    return out


def response(setting: int, params: FilterParams, freqs: np.ndarray) -> np.ndarray:
    """Complex response of the filter bank at ``freqs`` (Hz, may be negative)."""
    freqs = np.asarray(freqs, dtype=float)
    h = np.ones(freqs.shape, dtype=complex)
    z1 = np.exp(-2j * np.pi * freqs / FPGA_CLOCK_HZ)  # one-cycle delay
    for alpha, highpass in stage_settings(setting, params):
        # y[n+1] = y[n] + alpha*(x[n-1] - y[n-1])  ->  H = alpha z^-2 / (1 - z^-1 + alpha z^-2)
        lp = alpha * z1**2 / (1.0 - z1 + alpha * z1**2)
        h *= z1 * (1.0 - lp) if highpass else lp  # highpass = registered delta
    return h


def dc_gain(setting: int, params: FilterParams) -> float:
    """DC gain of the bank: 0 if any highpass stage is on, else 1."""
    return 0.0 if any(hp for _, hp in stage_settings(setting, params)) else 1.0


def apply(setting: int, params: FilterParams, x: np.ndarray) -> np.ndarray | None:
    """The filter bank in the time domain, one sample per FPGA cycle, from rest.

    Each stage is the difference equation behind :func:`response`
    (``y[n] = y[n-1] - alpha y[n-2] + alpha x[n-2]``; a highpass stage outputs
    ``x[n-1] - lp[n-1]``).  Needs scipy (``lfilter``); returns ``None`` without it.
    """
    try:
        from scipy.signal import lfilter
    except ImportError:  # pragma: no cover - scipy is in the test extra
        return None
    y = np.asarray(x)
    for alpha, highpass in stage_settings(setting, params):
        a = [1.0, -1.0, alpha]
        y = lfilter([0.0, 1.0, -1.0] if highpass else [0.0, 0.0, alpha], a, y)
    return y
