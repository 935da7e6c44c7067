"""Bad attribute values are refused before any register write (rpl_noqt.board.values).

Everything runs on the simulator through real sessions. A refusal is checked
three ways: the exception (type, ``module.attribute``, the value, what is
allowed), no request reached the simulator while the board lock was held, and
the attribute and its config entry kept their previous values.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pytest

import rpl_noqt
from rpl_noqt.board import values
from rpl_noqt.board.values import BadValueError, BadValueTypeError, Kind
from rpl_noqt.sim import Simulator

NAN, INF = float("nan"), float("inf")
REFUSED = (BadValueError, BadValueTypeError)


@pytest.fixture(scope="module")
def board():
    """One simulated board and session for the many refusal cases (each leaves the board as it was)."""
    with Simulator() as simulator:
        session = rpl_noqt.connect(simulator.host, simulator.port, ssh=False)
        try:
            yield simulator, session
        finally:
            while not session.closed:
                session.close()


def resolve(session: Any, path: str) -> Any:
    """'asg0' or 'lockbox.inputs.input1.calibration_data' -> the module."""
    first, *rest = path.split(".")
    module = getattr(session.rp, first) if hasattr(session.rp, first) else getattr(session.pyrpl, first)
    for name in rest:
        module = getattr(module, name)
    return module


def snapshot(module: Any, attr: str) -> tuple[str, str | None]:
    """The attribute's value and its config entry, as text (NaN-safe comparison)."""
    value = getattr(module, attr)
    data = module.c._data if module.c is not None else {}
    return repr(list(value) if isinstance(value, list) else value), repr(data.get(attr)) if attr in data else None


def assert_refused(sim: Simulator, session: Any, path: str, attr: str, value: Any) -> str:
    module = resolve(session, path)
    before = snapshot(module, attr)
    with session.lock:  # nobody else may talk to the board meanwhile
        requests = sim.requests
        with pytest.raises(REFUSED) as info:
            setattr(module, attr, value)
        assert sim.requests == requests, f"{path}.{attr} = {value!r} reached the board before being refused"
    assert snapshot(module, attr) == before, "the refused value changed the attribute or its config"
    message = str(info.value)
    assert f"{path}.{attr}" in message and repr(value) in message and "allowed" in message, message
    assert info.value.attribute == f"{path}.{attr}"
    return message


# -- refusals, one or more per attribute kind -----------------------------------------------------
# (module path, attribute, bad value, descriptor class it exercises)
REFUSALS = [
    ("pid1", "setpoint", -INF, "FloatRegister"),
    ("scope", "threshold", np.float64(NAN), "FloatRegister"),
    ("trig", "hysteresis", "0.1", "FloatRegister"),
    ("pid2", "p", -INF, "GainRegister"),
    ("pid0", "i", "0.5", "GainRegister"),
    ("iq1", "amplitude", 0.1 + 0.2j, "GainRegister"),
    ("asg1", "frequency", np.nan, "FrequencyRegister"),
    ("iq2", "frequency", False, "FrequencyRegister"),
    ("asg0", "start_phase", INF, "PhaseRegister"),
    ("iq0", "phase", None, "PhaseRegister"),
    ("trig", "phase_offset", np.float32(NAN), "PhaseRegister"),
    ("hk", "digital_loop", NAN, "IntRegister"),
    ("asg1", "cycles_per_burst", 1.5 + 0j, "IntRegister"),
    ("iir", "loops", True, "IntRegister"),
    ("hk", "led", [1, 2], "IntRegister"),
    ("iir", "_IIRBITS", INF, "ConstantIntRegister"),
    ("asg0", "advanced_trigger_delay", NAN, "LongRegister"),
    ("asg1", "advanced_trigger_delay", "12", "LongRegister"),
    ("ams", "dac1", INF, "PWMRegister"),
    ("pid2", "ival", -INF, "IValAttribute"),
    ("pid1", "ival", "1", "IValAttribute"),
    ("asg1", "offset", NAN, "AsgOffsetAttribute"),
    ("asg0", "amplitude", None, "AsgAmplitudeAttribute"),
    ("scope", "trigger_delay", INF, "FloatProperty"),
    ("scope", "trigger_delay", np.True_, "FloatProperty"),
    ("scope", "trace_average", NAN, "IntProperty"),
    ("networkanalyzer", "points", "1001", "IntProperty"),
    ("networkanalyzer", "start_freq", -INF, "FrequencyProperty"),
    ("iq1", "gain", NAN, "IqGain"),
    ("networkanalyzer", "amplitude", INF, "NaAmplitudeProperty"),
    ("spectrumanalyzer", "center", NAN, "CenterAttribute"),
    ("lockbox.inputs.input1.calibration_data", "_asg_phase", INF, "PhaseProperty"),
    ("iir", "poles", [complex(NAN, 1.0)], "IirListProperty"),
    ("iir", "real_poles", [-1000.0, NAN], "IirFloatListProperty"),
    ("iir", "complex_zeros", ["-1000+1j"], "IirComplexListProperty"),
    ("iir", "complex_poles", None, "IirComplexListProperty"),
    ("iq0", "bandwidth", [NAN, 0], "FilterRegister"),
    ("pid1", "inputfilter", True, "FilterRegister"),
    ("iq2", "acbandwidth", INF, "IqAcbandwidth"),
    ("networkanalyzer", "rbw", NAN, "RbwAttribute"),
    ("networkanalyzer", "acbandwidth", "50", "NaAcBandwidth"),
    ("spectrumanalyzer", "rbw", -INF, "RbwProperty"),
    ("spectrumanalyzer", "span", NAN, "SpanFilterProperty"),
    ("spectrumanalyzer", "acbandwidth", None, "SpecAnAcBandwidth"),
    ("lockbox.outputs.output1", "additional_filter", [NAN], "AdditionalFilterAttribute"),
    ("scope", "average", "false", "BoolRegister"),
    ("asg0", "random_phase", NAN, "BoolRegister"),
    ("hk", "expansion_N1", None, "IORegister"),
    ("pwm0", "_paused", "no", "PauseRegister"),
    ("networkanalyzer", "logscale", "yes", "LogScaleProperty"),
    ("hk", "expansion_P2_output", [True], "ExpansionDirection"),
    ("asg1", "output_direct", True, "SelectRegister"),
    ("asg0", "trigger_source", NAN, "SelectRegister"),
    ("pid0", "output_direct", "out3", "SelectRegister"),
    ("scope", "input1", True, "InputSelectRegister"),
    ("pid1", "input", np.float64(INF), "InputSelectRegister"),
    ("scope", "decimation", True, "DecimationRegister"),
    ("scope", "decimation", 3, "DecimationRegister"),
    ("scope", "duration", INF, "DurationProperty"),
    ("scope", "duration", "0.1", "DurationProperty"),
    ("scope", "sampling_time", NAN, "SamplingTimeProperty"),
    ("scope", "trigger_source", False, "SelectProperty"),
    ("asg1", "waveform", "triangle", "WaveformAttribute"),
    ("networkanalyzer", "input", np.nan, "InputSelectProperty"),
    ("spectrumanalyzer", "window", True, "WindowProperty"),
    ("iir", "tf_type", "bogus", "TfTypeProperty"),
    ("scope", "curve_name", None, "StringProperty"),
    ("curveviewer", "params", b"bytes", "TextProperty"),
]


@pytest.mark.parametrize(("path", "attr", "value", "kind"), REFUSALS,
                         ids=[f"{p}.{a}={v!r}" for p, a, v, _ in REFUSALS])
def test_bad_value_is_refused_before_any_write(board, path, attr, value, kind):
    sim, session = board
    module = resolve(session, path)
    assert type(getattr(type(module), attr)).__name__ == kind  # the case exercises the kind it claims
    assert_refused(sim, session, path, attr, value)


def test_every_numeric_descriptor_class_has_a_refusal_case(board):
    """Enumerate pyrpl's descriptor classes: each numeric one is exercised above (or is listed as never live)."""
    import pyrpl.attributes as attrs

    # classes no module of a default Pyrpl instantiates (abstract bases, lockbox models not loaded)
    not_live = {"NumberProperty", "ComplexProperty", "BasePropertyListProperty", "FloatAttributeListProperty",
                "ComplexAttributeListProperty", "FilterProperty", "SlowOutputProperty", "IqQuadratureFactorProperty",
                "IqFilterProperty"}
    classes, pending = set(), [attrs.BaseAttribute]
    while pending:
        cls = pending.pop()
        if cls not in classes:
            classes.add(cls)
            pending.extend(cls.__subclasses__())
    numeric = {cls.__name__ for cls in classes
               if values.kind_of(cls) in (Kind.NUMBER, Kind.PHASE, Kind.COMPLEX, Kind.LIST, Kind.FILTER)
               and cls.__module__.startswith("pyrpl.")}
    covered = {kind for *_, kind in REFUSALS}
    assert len(numeric) >= 30, sorted(numeric)
    missing = sorted(numeric - not_live - covered)
    assert not missing, f"numeric descriptor classes without a case: {missing}"
    for name in ("DurationProperty", "SamplingTimeProperty", "DecimationRegister", "SelectRegister",
                 "BoolRegister", "IORegister", "StringProperty"):
        assert name in covered
    # every class that defines __set__ carries the check
    for cls in classes:
        if "__set__" in cls.__dict__:
            assert getattr(cls.__dict__["__set__"], "_rpl_noqt_values", False), cls


def test_a_descriptor_class_defined_later_is_checked_too(board):
    import pyrpl.attributes as attrs

    class LaterProperty(attrs.FloatProperty):
        def __set__(self, obj: Any, value: Any) -> None:
            attrs.FloatProperty.__set__(self, obj, value)

    assert getattr(LaterProperty.__dict__["__set__"], "_rpl_noqt_values", False)
    assert getattr(LaterProperty.__dict__["__set__"], "_rpl_noqt_locked", False)  # the lock is still there
    assert values.kind_of(LaterProperty) == Kind.NUMBER
    targets = {entry.target for entry in rpl_noqt.patch_record()}
    assert "pyrpl.attributes.BaseProperty.__init_subclass__" in targets
    assert "pyrpl.attributes.BaseRegister.__set__ (value checks)" in targets


# -- accepted values ----------------------------------------------------------------------------------
ACCEPTED = [
    ("pid1", "setpoint", np.float32(0.25), 0.25),
    ("pid2", "setpoint", np.array(-0.5), -0.5),
    ("pid0", "p", 3, 3.0),
    ("hk", "led", np.uint8(17), 17),
    ("hk", "led", 254.6, 255),
    ("asg1", "frequency", np.int64(12500), pytest.approx(12500, abs=0.2)),
    ("iq0", "phase", np.float64(-30.0), pytest.approx(330.0, abs=1e-6)),
    ("asg0", "start_phase", 725, pytest.approx(5.0, abs=1e-6)),
    ("scope", "average", np.bool_(True), True),
    ("scope", "average", 0, False),
    ("asg0", "random_phase", 2.0, True),  # upstream's bool(): any non-zero number
    ("asg0", "random_phase", False, False),
    ("asg1", "output_direct", "out2", "out2"),
    ("scope", "decimation", np.int64(64), 64),
    ("scope", "duration", np.float64(0.01), pytest.approx(0.0167772, rel=1e-4)),
    ("iq2", "bandwidth", [np.float64(1000.0), 0], pytest.approx([1214.29, 0.0, 0.0, 0.0], rel=1e-3)),
    ("iir", "real_poles", [np.float64(-2000.0)], [-2000.0]),
]


@pytest.mark.parametrize(("path", "attr", "value", "expected"), ACCEPTED,
                         ids=[f"{p}.{a}={v!r}" for p, a, v, _ in ACCEPTED])
def test_numbers_of_any_numeric_type_are_accepted(board, path, attr, value, expected):
    _, session = board
    module = resolve(session, path)
    setattr(module, attr, value)
    assert getattr(module, attr) == expected


def test_list_elements_written_one_by_one_are_checked(board):
    sim, session = board
    iir = session.rp.iir
    iir.real_zeros = [-3000.0, -4000.0]
    with session.lock:
        requests = sim.requests
        with pytest.raises(BadValueError, match=r"iir\.real_zeros: element nan"):
            iir.real_zeros[1] = NAN
        assert sim.requests == requests
    assert list(iir.real_zeros) == [-3000.0, -4000.0]


# -- register ranges: no wraps, clamps logged once ----------------------------------------------
def read_raw(module: Any, address: int) -> int:
    return module._read(address)


@pytest.mark.parametrize(("path", "attr", "value", "expected"), [
    ("pid1", "ival", 4.5, 4 - 2**-13),        # the 16-bit integrator would wrap to -4 V at 4 V
    ("pid2", "ival", 3.99995, 4 - 2**-13),
    ("pid0", "ival", -7, -4.0),
    ("hk", "led", 300, 255),                  # the 8-bit LED register would wrap to 300 - 256
    ("hk", "led", 255.7, 255),
    ("asg1", "offset", 1.5, 1 - 2**-13),      # 14-bit signed offset (upstream: config 1.0, board 0.99988)
    ("asg0", "frequency", -50.0, 0.0),
    ("asg1", "cycles_per_burst", 2**40, 2**32 - 1),
    ("asg1", "advanced_trigger_delay", 2**64 + 5, 2**64 - 1),
])
def test_out_of_range_values_clamp_to_what_the_register_holds(board, path, attr, value, expected):
    _, session = board
    module = resolve(session, path)
    setattr(module, attr, value)
    assert getattr(module, attr) == expected
    if attr in module._setup_attributes:
        assert module.c._data[attr] == expected  # config and board agree


def test_led_and_ival_registers_hold_the_clamped_codes(board):
    _, session = board
    hk, pid = session.rp.hk, session.rp.pid0
    hk.led = 511
    assert read_raw(hk, 0x30) == 0xFF
    pid.ival = 4
    assert read_raw(pid, 0x100) == 0x7FFF  # +32767 codes, not 0x8000 (-4 V)
    assert pid.ival > 0


def test_a_clamp_is_logged_once_per_attribute_and_side_with_what_the_board_took(session, caplog):
    pid = session.rp.pid1
    caplog.set_level(logging.DEBUG, logger="rpl_noqt.board.values")
    for value in (2.0, 3.0, 1e6):
        pid.setpoint = value
    pid.setpoint = -2.5
    pid.setpoint = -9.0
    session.rp.pid2.setpoint = 2.0
    ours = [r for r in caplog.records if r.name == "rpl_noqt.board.values"]
    warnings = [r.getMessage() for r in ours if r.levelno == logging.WARNING]
    assert len(warnings) == 3, warnings
    assert "pid1.setpoint: 2.0 is above the maximum 0.9998779296875" in warnings[0]
    assert "the board took 0.9998779296875" in warnings[0]
    assert "pid1.setpoint: -2.5 is below the minimum -1.0" in warnings[1] and "the board took -1.0" in warnings[1]
    assert warnings[2].startswith("pid2.setpoint: 2.0")
    debug = [r for r in ours if r.levelno == logging.DEBUG]
    assert len(debug) == 3


# -- strict mode ---------------------------------------------------------------------------------------
def test_strict_mode_refuses_out_of_range_values_per_board(sim, session):
    rp = session.pyrpl.rp
    pid = rp.pid0
    pid.setpoint = 0.5
    pid.ival = 1.0
    assert not values.is_strict(pid)
    values.set_strict(rp, True)
    try:
        assert values.is_strict(pid) and values.is_strict(session.pyrpl)
        assert values.is_strict(session.pyrpl.networkanalyzer)  # a software module of the board
        for attr, value in (("setpoint", 1.5), ("setpoint", -1.25), ("ival", 4.0), ("p", 1e9)):
            before = snapshot(pid, attr)
            with session.lock:
                requests = sim.requests
                with pytest.raises(BadValueError, match=rf"pid0\.{attr}: .*strict mode") as info:
                    setattr(pid, attr, value)
                assert sim.requests == requests
            assert snapshot(pid, attr) == before
            assert repr(value) in str(info.value)
        assert pid.setpoint == 0.5 and pid.c._data["setpoint"] == 0.5
        pid.setpoint = -0.75  # in range: accepted as ever
        assert pid.setpoint == -0.75
        with Simulator() as other_sim, rpl_noqt.connect(other_sim.host, other_sim.port, ssh=False) as other:
            assert not values.is_strict(other.rp)
            other.rp.pid0.setpoint = 1.5  # another board keeps clamping
            assert other.rp.pid0.setpoint == pytest.approx(1 - 2**-13)
    finally:
        values.set_strict(session.rp.pid0, False)
    pid.setpoint = 1.5
    assert pid.setpoint == pytest.approx(1 - 2**-13)


def test_set_strict_needs_a_board():
    with pytest.raises(ValueError, match="belongs to no Red Pitaya"):
        values.set_strict(object(), True)
    assert values.is_strict(object()) is False


# -- the bounds themselves -----------------------------------------------------------------------
def test_effective_bounds_narrow_declared_ranges_to_the_register(board):
    import pyrpl.attributes as attrs

    def bounds(descriptor: Any, hardware: bool = True) -> tuple[float, float]:
        return values.effective_bounds(descriptor, hardware=hardware)

    assert bounds(attrs.FloatRegister(0, bits=14, norm=2**13, max=2.0)) == (-1.0, 8191 / 8192)
    assert bounds(attrs.FloatRegister(0, bits=14, norm=2**13, signed=False, max=5.0)) == (0, 16383 / 8192)
    assert bounds(attrs.FloatRegister(0, bits=30, bitmask=0x3FFF << 16, norm=2**29)) == (-1.0, 0x1FFF0000 / 2**29)
    assert bounds(attrs.IntRegister(0, bits=8, max=1000)) == (0, 255)
    assert bounds(attrs.IntRegister(0, max=2**12)) == (0, 2**12 - 1)
    assert bounds(attrs.IntRegister(0)) == (0, 2**32 - 1)
    assert bounds(attrs.LongRegister(0, bits=64)) == (0, 2**64 - 1)
    assert bounds(attrs.FrequencyRegister(0, bits=30)) == (0, 62.5e6)
    lo, hi = bounds(attrs.PhaseRegister(0, bits=14))
    assert math.isinf(lo) and math.isinf(hi)
    full_scale = attrs.FloatProperty(min=-4, max=4, increment=2**-13)
    assert bounds(full_scale, hardware=True) == (-4, 4 - 2**-13)
    assert bounds(full_scale, hardware=False) == (-4, 4)  # a software number wraps nowhere
    assert bounds(attrs.FloatProperty(min=0, max=1.8, increment=0.01)) == (0, 1.8)


def test_a_refused_config_entry_is_skipped_at_load_not_fatal(sim, tmp_path, caplog):
    """An old config holding ``.nan`` (upstream saved it) still connects; the entry is named."""
    import pathlib

    path = pathlib.Path(tmp_path) / "old.yml"
    path.write_text("redpitaya: {}\nscope:\n  trigger_delay: .nan\n  threshold: 0.125\n"
                    "asg0:\n  frequency: .inf\n  offset: 0.25\n", encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="rpl_noqt.board.values"):
        s = rpl_noqt.connect(sim.host, sim.port, ssh=False, config=path)
    try:
        text = caplog.text
        assert "scope.trigger_delay = nan refused" in text and "asg0.frequency = inf refused" in text
        assert s.rp.scope.threshold == pytest.approx(0.125, abs=1e-3)  # the rest loaded
        assert s.rp.asg0.offset == pytest.approx(0.25, abs=1e-3)
        assert math.isfinite(s.rp.scope.trigger_delay)
    finally:
        s.close()
