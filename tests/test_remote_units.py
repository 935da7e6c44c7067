"""The remote pieces that need no socket: payloads, the registry, addresses, the lock table."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pyleco", reason="remote sessions need the [remote] extra (pyleco)")

from rpl_noqt.errors import BoardLockedError  # noqa: E402
from rpl_noqt.remote import payloads  # noqa: E402
from rpl_noqt.remote.errors import RegistryMismatchError, RemoteNameError  # noqa: E402
from rpl_noqt.remote.registry import METHODS, Registry, build_registry, module_spec  # noqa: E402
from rpl_noqt.remote.surface import LockTable  # noqa: E402
from rpl_noqt.remote.wire import PROTOCOL, parse_host_port, parse_leco_url  # noqa: E402


# -- payloads ----------------------------------------------------------------------------
def test_arrays_travel_as_frames_with_dtype_and_shape():
    curve = np.arange(2 * 16384, dtype=np.float64).reshape(2, 16384)
    value = {"curve": curve, "n": np.int64(3), "z": 1 + 2j, "ok": np.bool_(True), "t": (1.5, "x")}
    data, frames = payloads.encode(value)
    text = json.dumps(data)
    assert len(text) < 200 and len(frames) == 1 and len(frames[0]) == curve.nbytes  # never a JSON list
    assert data["curve"] == {"__ndarray__": 0, "dtype": "<f8", "shape": [2, 16384]}
    back = payloads.decode(json.loads(text), frames)
    np.testing.assert_array_equal(back["curve"], curve)
    assert back["curve"].flags.writeable and back["n"] == 3 and back["z"] == 1 + 2j and back["ok"] is True
    assert back["t"] == [1.5, "x"]


def test_non_finite_floats_keep_their_value():
    data, frames = payloads.encode([float("nan"), float("inf")])
    back = payloads.decode(json.loads(json.dumps(data, allow_nan=False)), frames)
    assert np.isnan(back[0]) and back[1] == float("inf") and isinstance(back[1], float)


@pytest.mark.parametrize("value", [object(), {1: 2}, np.array(["a"]), np.array([object()]), {"__ndarray__": 0}])
def test_unsendable_values_are_refused_by_type(value):
    with pytest.raises(TypeError, match="cannot send"):
        payloads.encode(value)


@pytest.mark.parametrize("marker, frames, match", [
    ({"__ndarray__": 1, "dtype": "<f8", "shape": [1]}, [b"\0" * 8], "names frame 1"),
    ({"__ndarray__": 0, "dtype": "|O", "shape": [1]}, [b"\0" * 8], "numeric arrays only"),
    ({"__ndarray__": 0, "dtype": "<f8", "shape": [2]}, [b"\0" * 8], "holds 8 bytes"),
    ({"__ndarray__": 0, "dtype": "<f8", "shape": "2"}, [b"\0" * 8], "malformed array shape"),
    ({"__ndarray__": 0, "dtype": "nonsense", "shape": [1]}, [b"\0" * 8], "unknown dtype"),
    ({"__complex__": [1]}, [], "malformed complex"),
])
def test_malformed_payloads_are_refused(marker, frames, match):
    with pytest.raises(payloads.PayloadError, match=match):
        payloads.decode(marker, frames)


# -- addresses ---------------------------------------------------------------------------
def test_leco_urls():
    assert parse_leco_url("leco://rp1").url == "leco://rp1@127.0.0.1:12300"
    a = parse_leco_url("leco://lab.rp-2@labpc.local:4000")
    assert (a.name, a.host, a.port) == ("lab.rp-2", "labpc.local", 4000)
    assert parse_leco_url("leco://rp@[::1]:5").host == "::1"
    for bad in ("leco://", "leco://a b", "leco://x@h:0", "leco://x@h:99999", "rp1", "leco://a.b.c", "leco://x;rm"):
        with pytest.raises(ValueError):
            parse_leco_url(bad)
    assert parse_host_port("10.0.0.2:12301") == ("10.0.0.2", 12301)
    assert parse_host_port("localhost") == ("localhost", 12300)


# -- registry ----------------------------------------------------------------------------
def test_registry_from_pyrpl_classes(fake_pyrpl):
    registry, modules = build_registry(fake_pyrpl, "0.9.9.1")
    assert {"asg0", "scope", "pid0", "iq2", "sampler", "networkanalyzer"} <= set(registry.modules)
    assert modules["asg0"] is fake_pyrpl.rp.asg0
    asg = registry.modules["asg0"]
    assert asg.kind == "Asg" and asg.attributes["frequency"].kind == "float"
    assert asg.attributes["frequency"].writable and asg.attributes["waveform"].kind == "select"
    assert asg.attributes["data"].kind == "array"  # an allow-listed plain property
    scope = registry.modules["scope"]
    assert not scope.attributes["voltage_in1"].writable  # a register, but not a PyRPL setting
    assert "_trigger_armed" not in scope.attributes  # private descriptors are not offered
    assert scope.methods["single"].long and scope.methods["single"].timeout_param == "timeout"
    assert "save_curve" not in scope.methods and "free" not in asg.methods  # not allow-listed
    assert registry.modules["iq0"].attributes["inputfilter"].kind == "filter"
    # the same classes give the same registry: its hash is a fingerprint of PyRPL + allow-list
    assert build_registry(fake_pyrpl, "0.9.9.1")[0].hash == registry.hash


def test_registry_lookups_refuse_what_it_does_not_list(fake_pyrpl):
    registry, _ = build_registry(fake_pyrpl, "0.9.9.1")
    for path in ("asg0.__class__", "asg0._counter_step", "nomodule.x", "asg0", "asg0.frequency.real"):
        with pytest.raises(RemoteNameError):
            registry.attribute(path)
    with pytest.raises(RemoteNameError, match="allowed: .*setup"):
        registry.method("asg0.save_state")


def test_registry_wire_form_is_verified(fake_pyrpl):
    registry, _ = build_registry(fake_pyrpl, "0.9.9.1")
    wire = json.loads(json.dumps(registry.to_wire()))
    assert Registry.from_wire(wire) == registry and Registry.from_wire(wire).hash == registry.hash
    tampered = json.loads(json.dumps(wire))
    tampered["modules"]["asg0"]["methods"]["free"] = {"writes": True, "long": False, "params": [],
                                                     "timeout_param": None}
    with pytest.raises(RegistryMismatchError, match="does not match its hash"):
        Registry.from_wire(tampered)
    other = Registry(registry.modules, "0.9.8.0")
    with pytest.raises(RegistryMismatchError, match="PyRPL 0.9.8.0"):
        Registry.from_wire(other.to_wire()).verify(pyrpl_versions=["0.9.9.1"])
    with pytest.raises(RegistryMismatchError, match="protocol"):
        Registry(registry.modules, "0.9.9.1", PROTOCOL + 1).verify(pyrpl_versions=["0.9.9.1"])
    with pytest.raises(RegistryMismatchError, match="expected"):
        registry.verify(pyrpl_versions=["0.9.9.1"], expected_hash="0" * 64)


def test_allow_list_names_only_methods_pyrpl_has():
    import pyrpl.hardware_modules as hw

    class Renamed(hw.Scope):  # a PyRPL that renamed single(): caught when the registry is built
        single = None

    Renamed.__name__ = "Scope"
    with pytest.raises(RuntimeError, match="no method 'single'"):
        module_spec("scope", Renamed)
    assert set(METHODS) >= {"Scope", "Asg", "Pid", "Iq", "Sampler"}


# -- locks -------------------------------------------------------------------------------
def test_lock_table_semantics():
    table = LockTable("leco://rp")
    assert table.lock("a", None) and table.lock("a", "asg0")  # reentrant for its holder
    table.check("a", "asg0.frequency", "set")
    with pytest.raises(BoardLockedError, match="locked by 'a'") as info:
        table.check("b", "asg0.frequency", "set")
    assert info.value.holder == "a" and info.value.resource is None
    assert not table.lock("b", "pid0") and not table.unlock("b", None)
    assert table.unlock("a", None)
    assert table.lock("b", "pid0")
    assert not table.lock("a", None)  # b holds a part of the board
    table.check("a", "asg0.frequency", "set")  # asg0 is still a's
    with pytest.raises(BoardLockedError):
        table.check("b", "asg0.offset", "set")
    assert table.force_unlock("asg0") == "a" and table.release_all("b") == 1 and table.holders() == {}


# -- the embedded coordinator ------------------------------------------------------------
def test_embedded_coordinator_prints_frames_as_sizes():
    """pyleco's Coordinator formats every routed payload into a debug f-string: a curve's frames
    must print as their sizes (not a megabyte of repr), and still go out unchanged."""
    from pyleco.core.message import Message

    from rpl_noqt.remote.coordinator import _Frames

    curve = bytes(range(256)) * 1024
    message = Message(b"rp", sender=b"c", data=b"{}", additional_payload=[curve])
    frames = _Frames(message.payload)
    assert f"{frames}" == "<2 frame(s), 262146 bytes>" and repr(frames) == str(frames)
    message.payload = frames
    assert message.to_frames()[-1] == curve and list(frames) == [b"{}", curve]
