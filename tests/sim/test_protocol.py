"""The monitor_server protocol as monitor_server.c implements it, over a raw socket."""

from __future__ import annotations

import argparse
import threading

import numpy as np
import pytest

from rpl_noqt.sim import ClientPolicy, Faults, Simulator
from rpl_noqt.sim import cli as sim_cli
from rpl_noqt.board.wire import build_header, parse_header

ASG0_FREQ = 0x40200010
PID0_SETPOINT = 0x40300104


def test_write_then_read_round_trip_with_header_echo(raw):
    c = raw()
    echo = c.write(ASG0_FREQ, [12345])
    assert echo == c.header("w", 1, ASG0_FREQ)
    echo, words = c.read(ASG0_FREQ)
    assert echo == c.header("r", 1, ASG0_FREQ)
    assert words == [12345]


def test_multi_word_write_and_read(raw):
    c = raw()
    c.write(0x40200004, [0x1234, 0x3FFF, 0x2000, 0x100])  # amp/offset, wrap, start, step of asg0
    _, words = c.read(0x40200004, 4)
    assert words == [0x1234, 0x3FFF, 0x2000, 0x100]


def test_register_width_is_masked_like_the_rtl(raw):
    c = raw()
    c.write(PID0_SETPOINT, [0xFFFFFFFF])  # 14-bit register
    assert c.read(PID0_SETPOINT)[1] == [0x3FFF]


def test_zero_length_header_is_ignored_even_for_close(raw):
    c = raw()
    c.sock.sendall(c.header("c", 0, 0))  # the C server checks length 0 first
    c.sock.sendall(c.header("r", 0, ASG0_FREQ))
    echo, words = c.read(0x40000000)  # hk id
    assert echo == c.header("r", 1, 0x40000000)
    assert words == [1]


def test_close_command_ends_the_connection(raw, sim):
    c = raw()
    c.sock.sendall(c.header("c", 1, 0))
    assert c.is_closed()
    c2 = raw()  # the server keeps listening
    assert c2.read(0x40000000)[1] == [1]


def test_unknown_command_closes_connection_but_not_the_server(raw, sim):
    c = raw()
    c.sock.sendall(b"x\x00\x00\x00" + bytes(4))  # length 0: ignored, like monitor_server.c
    assert not c.is_closed(timeout=0.2)
    c.sock.sendall(b"x\x00\x01\x00" + bytes(4))
    assert c.is_closed()
    assert raw().read(0x40000000)[1] == [1]
    assert sim.running


def test_truncated_header_and_truncated_payload_are_clean_disconnects(raw, sim):
    c = raw()
    c.sock.sendall(b"r\x00\x01")
    c.close()
    c = raw()
    c.sock.sendall(c.header("w", 4, ASG0_FREQ) + b"\x00" * 6)  # payload short by 10 bytes
    c.sock.shutdown(1)
    assert c.is_closed()
    assert raw().read(0x40000000)[1] == [1]


def test_maximum_length_read(raw):
    c = raw()
    echo, words = c.read(0x40110000, 65535)  # more than the scope buffer: runs into ch2 and beyond
    assert echo == c.header("r", 65535, 0x40110000)
    assert len(words) == 65535


def test_unmapped_addresses_read_zero(raw):
    c = raw()
    assert c.read(0x40500000, 2)[1] == [0, 0]
    c.write(0x40500000, [7])
    assert c.read(0x40500000)[1] == [0]


def test_pyrpl_monitor_client_round_trip(client):
    assert client.writes(ASG0_FREQ, [4321]) is True
    assert list(client.reads(ASG0_FREQ, 1)) == [4321]
    data = client.reads(0x40110000, 2**14)
    assert isinstance(data, np.ndarray) and data.shape == (2**14,)


def test_header_helpers():
    h = build_header("r", 3, 0x40100014)
    parsed = parse_header(h)
    assert (chr(parsed.command), parsed.length, parsed.address) == ("r", 3, 0x40100014)
    with pytest.raises(ValueError, match="command"):
        build_header("q", 1, 0)
    with pytest.raises(ValueError, match="length"):
        build_header("r", 70000, 0)


@pytest.mark.parametrize("port", [-1, 65536, "2222", 1.5, True])
def test_bad_port_is_a_clear_value_error(port):
    with pytest.raises(ValueError, match="port"):
        Simulator(port=port)


def test_bad_policy_names_the_allowed_values():
    with pytest.raises(ValueError, match="allowed: queue, exit, reject, kick, share"):
        Simulator(client_policy="first-come")


def test_bad_faults_argument():
    with pytest.raises(ValueError, match="faults"):
        Simulator(faults={"latency": 1})  # type: ignore[arg-type]


def test_thread_name_and_clean_stop():
    sim = Simulator().start()
    try:
        names = [t.name for t in threading.enumerate()]
        assert f"rpl-sim-{sim.port}" in names
        assert sim.port > 0
    finally:
        sim.stop()
    assert not any(t.name == f"rpl-sim-{sim.port}" for t in threading.enumerate())
    sim.stop()  # idempotent


def test_start_twice_is_an_error(sim):
    with pytest.raises(RuntimeError, match="already running"):
        sim.start()


def test_cli_parser_defaults_and_choices():
    parser = argparse.ArgumentParser()
    sim_cli.configure_parser(parser)
    args = parser.parse_args([])
    assert (args.host, args.port, args.client_policy) == ("127.0.0.1", 2222, "queue")
    args = parser.parse_args(["--port", "0", "--client-policy", "kick"])
    assert args.port == 0 and ClientPolicy(args.client_policy) is ClientPolicy.KICK
    with pytest.raises(SystemExit):
        parser.parse_args(["--client-policy", "nope"])


def test_cli_runs_until_signalled(tmp_path, raw):
    import os
    import signal
    import subprocess
    import sys

    code = (
        "import argparse, sys\n"
        "from rpl_noqt.sim import cli\n"
        "p = argparse.ArgumentParser(); cli.configure_parser(p)\n"
        "sys.exit(cli.run(p.parse_args(['--port', '0'])))\n"
    )
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=repo)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path))
    try:
        line = proc.stdout.readline()
        assert line.startswith("rpl-noqt sim listening on 127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        c = raw(port)
        assert c.read(0x40000000)[1] == [1]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_faults_validation():
    f = Faults()
    with pytest.raises(ValueError, match="latency"):
        f.latency = -1
    with pytest.raises(ValueError, match="drop_after"):
        f.drop_after = 0
    with pytest.raises(ValueError, match="garble"):
        f.garble = -2
    f.latency, f.drop_after, f.garble = 0.5, 3, 1
    f.clear()
    assert (f.latency, f.drop_after, f.garble) == (0.0, None, 0)


def test_struct_layout_matches_monitor_client(pyrpl_lib):
    # the header upstream's client builds by hand must parse to what it means
    # (rpl-noqt replaces that client at activation: take the original)
    import rpl_noqt
    from pyrpl import redpitaya_client

    MonitorClient = rpl_noqt.patch_record().get_original(redpitaya_client, "MonitorClient")
    assert MonitorClient is not redpitaya_client.MonitorClient

    sent = []

    class FakeSocket:
        def send(self, data):
            sent.append(data)
            return len(data)

        def recv(self, n):
            return sent[0][:8] + b"\x00" * (n - 8)

        def close(self):
            pass

    c = MonitorClient.__new__(MonitorClient)
    c.socket = FakeSocket()
    c._reads(0x40200010, 2)
    h = parse_header(sent[0])
    assert (chr(h.command), h.length, h.address) == ("r", 2, 0x40200010)
