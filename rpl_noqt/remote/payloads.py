"""Values on the wire: JSON for scalars, LECO binary payload frames for arrays.

A curve is 2 x 16384 float64 values: as a JSON list it costs about 700 kB of
text and a parse on each side, as a frame it is the 256 kB of its memory. So
every numpy array in a request or a reply travels as one extra frame of the
LECO message (its raw bytes, C order), and the JSON keeps a small marker in
its place that says which frame, its dtype and its shape::

    {"__ndarray__": 0, "dtype": "<f8", "shape": [2, 16384]}

Complex numbers (IQ, IIR poles) become ``{"__complex__": [re, im]}``. Nothing
else is encoded: a value that is not JSON, a complex or a numeric array is
refused with a TypeError naming its type. Decoding builds arrays only from
numeric dtypes (bool, int, uint, float, complex) and checks the frame length
against dtype and shape; there is no pickle and no object dtype anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ("PayloadError", "decode", "encode")

_ARRAY = "__ndarray__"
_COMPLEX = "__complex__"
_NUMERIC_KINDS = frozenset("biufc")
_MAX_DIMS = 8


class PayloadError(ValueError):
    """A message's values or frames are malformed (never a partial decode)."""


def encode(value: Any) -> tuple[Any, list[bytes]]:
    """``value`` as (JSON-able structure, binary frames); arrays go to the frames."""
    frames: list[bytes] = []
    return _encode(value, frames), frames


def _encode(value: Any, frames: list[bytes]) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):  # JSON has no NaN/inf: keep them exact as a 0-d array
            return _encode(np.asarray(value), frames)
        return value
    if isinstance(value, (complex, np.complexfloating)):
        value = complex(value)
        return {_COMPLEX: [_encode(value.real, frames), _encode(value.imag, frames)]}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"cannot send an array of dtype {value.dtype} (numeric arrays only)")
        array = np.asarray(value, order="C")  # (ascontiguousarray would make a 0-d array 1-d)
        frames.append(array.tobytes())
        return {_ARRAY: len(frames) - 1, "dtype": array.dtype.str, "shape": list(array.shape)}
    if isinstance(value, (list, tuple)):
        return [_encode(v, frames) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"cannot send a dict with a {type(k).__name__} key ({k!r}): keys must be str")
            if k in (_ARRAY, _COMPLEX):
                raise TypeError(f"cannot send a dict with the reserved key {k!r}")
            out[k] = _encode(v, frames)
        return out
    raise TypeError(f"cannot send a value of type {type(value).__name__} to or from a board server "
                    "(JSON values, complex numbers and numeric numpy arrays only)")


def decode(data: Any, frames: Sequence[bytes]) -> Any:
    """The value :func:`encode` made, rebuilt from its JSON structure and frames."""
    return _decode(data, frames)


def _decode(data: Any, frames: Sequence[bytes]) -> Any:
    if isinstance(data, list):
        return [_decode(v, frames) for v in data]
    if not isinstance(data, dict):
        return data
    if _ARRAY in data:
        return _array(data, frames)
    if _COMPLEX in data:
        parts = data[_COMPLEX]
        if not (isinstance(parts, list) and len(parts) == 2):
            raise PayloadError(f"malformed complex value {data!r}")
        re, im = (_decode(p, frames) for p in parts)
        if isinstance(re, np.ndarray):
            re = float(re)
        if isinstance(im, np.ndarray):
            im = float(im)
        if not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in (re, im)):
            raise PayloadError(f"malformed complex value {data!r}")
        return complex(re, im)
    return {k: _decode(v, frames) for k, v in data.items()}


def _array(data: dict[str, Any], frames: Sequence[bytes]) -> Any:
    index, dtype_str, shape = data.get(_ARRAY), data.get("dtype"), data.get("shape")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(frames):
        raise PayloadError(f"array marker names frame {index!r}, but the message has {len(frames)} frame(s)")
    if not isinstance(dtype_str, str):
        raise PayloadError(f"array marker without a dtype string: {data!r}")
    try:
        dtype = np.dtype(dtype_str)
    except TypeError as exc:
        raise PayloadError(f"unknown dtype {dtype_str!r}") from exc
    if dtype.kind not in _NUMERIC_KINDS or dtype.hasobject or dtype.fields is not None:
        raise PayloadError(f"refused dtype {dtype_str!r}: numeric arrays only")
    if (not isinstance(shape, list) or len(shape) > _MAX_DIMS
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise PayloadError(f"malformed array shape {shape!r}")
    frame = frames[index]
    expected = dtype.itemsize * math.prod(shape)
    if len(frame) != expected:
        raise PayloadError(f"array frame {index} holds {len(frame)} bytes, dtype {dtype_str} and shape "
                           f"{tuple(shape)} need {expected}")
    array = np.frombuffer(frame, dtype=dtype).reshape(shape)
    if not shape:  # a non-finite float (JSON has none) travels as a 0-d array: give the scalar back
        return array.item()
    # a copy: the frame is read-only bytes, and callers expect an array they own, as in-process
    return array.copy()
