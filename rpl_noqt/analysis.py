"""Small measurements on traces (sine fit), shared by the demo and tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ("SineFit", "fit_sine")


@dataclass(frozen=True)
class SineFit:
    """``offset + amplitude * sin(2 pi frequency t + phase)`` fitted to a trace."""

    frequency: float
    amplitude: float
    phase: float
    offset: float
    rms_residual: float


def fit_sine(t: np.ndarray, y: np.ndarray, iterations: int = 8) -> SineFit:
    """Fit one sine: FFT peak for a start, then Gauss-Newton on all four parameters.

    Needs at least a few periods in the trace; raises ValueError otherwise.
    """
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    if t.shape != y.shape or t.ndim != 1 or t.size < 16:
        raise ValueError(f"need two equal 1-D arrays of at least 16 samples, got {t.shape} and {y.shape}")
    dt = float(np.mean(np.diff(t)))
    if not dt > 0:
        raise ValueError("time axis must increase")
    window = np.hanning(y.size)
    spectrum = np.abs(np.fft.rfft((y - y.mean()) * window))
    k = int(np.argmax(spectrum[1:]) + 1)
    if 1 <= k < spectrum.size - 1:  # parabolic interpolation of the peak
        a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-300)
        k = k + 0.5 * (a - c) / (a - 2 * b + c)
    freq = k / (y.size * dt)
    t0 = t - t[0]
    params = np.array([freq, 0.0, 0.0, y.mean()])  # f, in-phase, quadrature, offset
    for _ in range(iterations):
        f, s, c, o = params
        w = 2 * np.pi * f * t0
        sin, cos = np.sin(w), np.cos(w)
        if s == 0 and c == 0:  # linear solve for amplitudes at fixed frequency first
            basis = np.column_stack([sin, cos, np.ones_like(t0)])
            s, c, o = np.linalg.lstsq(basis, y, rcond=None)[0]
            params = np.array([f, s, c, o])
            continue
        model = s * sin + c * cos + o
        jac = np.column_stack([2 * np.pi * t0 * (s * cos - c * sin), sin, cos, np.ones_like(t0)])
        step = np.linalg.lstsq(jac, y - model, rcond=None)[0]
        params = params + step
        if abs(step[0]) < 1e-12 * abs(params[0]):
            break
    f, s, c, o = params
    residual = y - (s * np.sin(2 * np.pi * f * t0) + c * np.cos(2 * np.pi * f * t0) + o)
    return SineFit(float(f), float(np.hypot(s, c)), float(np.arctan2(c, s)), float(o),
                   float(np.sqrt(np.mean(residual**2))))
