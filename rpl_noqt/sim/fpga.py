"""Register model of PyRPL's FPGA image: address decode, time base, locking.

``FpgaModel.read``/``write`` take absolute bus addresses as the monitor_server
receives them (0x40000000 hk, 0x40100000 scope, 0x40200000 asg, 0x40300000 DSP
bus, 0x40400000 ams) and return/accept 32-bit words.  Unmapped addresses read
0 and ignore writes, like the ``default`` branches of the RTL decoders.

Every public method takes the model lock, so tests may change the analog
loopback or inject tones from any thread while the server thread serves
PyRPL.  Before each access the slow state (PID integrators) is advanced to the
current time; everything else is computed in closed form when read.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from .ams import AMS_BASE, Ams
from .analog import AnalogFrontend, Loopback, Rolloff
from .asg import ASG_BASE, Asg, AsgChannel
from .clock import Clock
from .dio import Dio0
from .dsp import DSP_BASE, SLOT_NAMES, DspBus, EvalContext
from .hk import HK_BASE, Hk
from .iir import Iir
from .iq import Iq
from .pid import Pid, advance_coupled
from .scope import SCOPE_BASE, Scope
from .trig import Trig

log = logging.getLogger(__name__)

#: maximum integrator steps per access; implicit Euler keeps long steps stable
MAX_STEPS = 256
#: the same for PIDs that reach each other (stepped together, ``pid.advance_coupled``): the
#: coupling through the others' integrators is explicit, so their steps stay short longer
MAX_COUPLED_STEPS = 4096
_SLOTS = {name: n for n, name in SLOT_NAMES.items()}


def _reaches_dsp(address: int, count: int) -> bool:
    """Whether a write of ``count`` words from ``address`` touches the DSP bus (0x40300000)."""
    return (address & 0xFFF00000 == DSP_BASE or ((address + 4 * max(count - 1, 0)) & 0xFFF00000) == DSP_BASE
            or (address & 0xFFF00000) < DSP_BASE < ((address + 4 * max(count - 1, 0)) & 0xFFF00000))


#: DSP offsets (within a module's 64 kB) of an IQ module's local-oscillator phase and frequency
_IQ_OSCILLATOR = (0x104, 0x108)
#: ASG offsets of the two generators' phase steps (their frequencies)
_ASG_OSCILLATOR = (0x10, 0x30)


def _write_effect(address: int) -> str:
    """What a one-word write at ``address`` can change (:meth:`FpgaModel._before_write`).

    ``"none"``: the scope's registers (it drives no signal, and keeps the samples
    it has taken itself where its own settings change them: ``Scope.write``);
    ``"tone"``: an oscillator's frequency or phase (IQ 0x104/0x108, ASG steps),
    which moves tones without changing any loop's static response;
    ``"routing"``: the DSP bus (which PIDs move, how they couple);
    ``"signals"``: anything else (ASG amplitudes and tables, housekeeping, AMS).
    """
    region = address & 0xFFF00000
    if region == SCOPE_BASE:
        return "none"
    if region == DSP_BASE:
        slot = (address >> 16) & 0xF
        return "tone" if 5 <= slot <= 7 and address & 0xFFFF in _IQ_OSCILLATOR else "routing"
    if region == ASG_BASE and address & 0xFFFFF in _ASG_OSCILLATOR:
        return "tone"
    return "signals"


class FpgaModel:
    """The simulated FPGA.  Thread-safe: every public method holds ``self.lock``."""

    def __init__(self, seed: int | None = None, clock: Clock | None = None) -> None:
        self.lock = threading.RLock()
        self.clock = clock if clock is not None else Clock()
        self._seed = seed
        #: model time at which the FPGA was last reloaded: its cycle counter counts from there
        self.loaded_at = 0.0
        #: what is wired behind the outputs (``rpl_noqt.sim.plants``); None: the BNC cables.
        #: Outside the FPGA, so a reload (:meth:`reset`) keeps it
        self.plant: Any = None
        self._build()

    def _build(self) -> None:
        self.rng = np.random.default_rng(self._seed)
        self.analog = AnalogFrontend()
        self.hk = Hk()
        self.ams = Ams()
        self.asg_block = Asg(self)
        self.asg: list[AsgChannel] = self.asg_block.channels
        self.bus = DspBus(self)
        for n in range(3):
            self.bus.blocks[n] = Pid(self, n)
        self.bus.blocks[3] = Trig(self, 3)
        self.bus.blocks[4] = Iir(self, 4)
        for n in range(5, 8):
            self.bus.blocks[n] = Iq(self, n)
        self.scope = Scope(self)
        self.dio = Dio0(self)
        self._t_dyn = self.clock.now()
        self.version = 0  # bumped by every change of the signals: caches of derived quantities key on it
        self.settings_version = 0  # the same, but not by a drifting plant's time (_bump)
        self.loop_version = 0  # the same, but not by an oscillator's frequency or phase either (_bump)
        self._routing_version = 0  # bumped by writes that may change which PIDs move (_active_pids)
        self._pid_cache: tuple[int, list[Any], list[float], list[tuple[list[Any], list[Any]]]] | None = None

    # -- bus access ------------------------------------------------------------------
    def read(self, address: int, count: int = 1) -> np.ndarray:
        """``count`` 32-bit words starting at absolute ``address``."""
        with self.lock, self.clock.held():  # one access, one instant
            self._advance()
            return self._read_words(address, count)

    def read_word(self, address: int) -> int:
        """The 32-bit word at absolute ``address`` as an int (``read(address, 1)``, without numpy)."""
        with self.lock, self.clock.held():  # one access, one instant
            self._advance()
            return self._read_word(address & 0xFFFFFFFF) & 0xFFFFFFFF

    def write(self, address: int, values: Sequence[int] | np.ndarray) -> None:
        """Write 32-bit words starting at absolute ``address``."""
        values = np.asarray(values, dtype=np.uint64).astype(np.int64)
        with self.lock, self.clock.held():  # one access, one instant
            self._advance()
            self._before_write(address & 0xFFFFFFFF, len(values))
            pin = self.dio.pin() if address & 0xFFF00000 == HK_BASE else None
            i, count = 0, len(values)
            while i < count:
                addr = (address + 4 * i) & 0xFFFFFFFF
                n = self._table_span(addr, count - i)
                if n:  # a run of ASG table words: one block write
                    self.asg_block.write_block((addr & 0xFFFFF), values[i:i + n])
                    i += n
                else:
                    self._write_word(addr, int(values[i]) & 0xFFFFFFFF)
                    i += 1
            if pin is not None and self.dio.pin() != pin:  # housekeeping drives DIO0_P: an external trigger edge
                self.dio.schedule(self.clock.now(), not pin)

    def write_word(self, address: int, value: int) -> None:
        """``write(address, [value])`` for one word, without building an array (the server's
        usual write: a scope arm or trigger, a register of a module)."""
        address &= 0xFFFFFFFF
        if address & 0xFFF00000 == ASG_BASE and 0x10000 <= address & 0xFFFFF < 0x30000:
            self.write(address, [value])  # a table word: the block path
            return
        with self.lock, self.clock.held():  # one access, one instant
            self._advance()
            self._before_write(address, 1)
            pin = self.dio.pin() if address & 0xFFF00000 == HK_BASE else None
            self._write_word(address, int(value) & 0xFFFFFFFF)
            if pin is not None and self.dio.pin() != pin:  # housekeeping drives DIO0_P: an external trigger edge
                self.dio.schedule(self.clock.now(), not pin)

    def _read_words(self, address: int, count: int) -> np.ndarray:
        """The words of one read, a block at a time.

        A read may cross from registers into a buffer, from one scope channel
        into the next or off the end of a region: each run of buffer or table
        words inside one region is read as a block (the scope brought up to
        date once for it), every other word on its own.
        """
        n = self._scope_span(address, count)
        if n == count:  # the usual read: part of one scope channel
            offset = address - SCOPE_BASE
            return self.scope.read_buffer((offset >> 16) - 1, (offset & 0xFFFF) >> 2, n).astype(np.uint32, copy=False)
        out = np.empty(count, dtype=np.uint32)
        i = 0
        while i < count:
            addr = (address + 4 * i) & 0xFFFFFFFF
            n = self._scope_span(addr, count - i)
            if n:
                offset = addr - SCOPE_BASE
                out[i:i + n] = self.scope.read_buffer((offset >> 16) - 1, (offset & 0xFFFF) >> 2, n)
                i += n
                continue
            n = self._table_span(addr, count - i)
            if n:
                channel = self.asg[((addr & 0xFFFFF) >> 16) - 1]
                start = (addr & 0xFFFF) >> 2
                out[i:i + n] = channel.table[start:start + n] & 0x3FFF
                i += n
                continue
            out[i] = self._read_word(addr) & 0xFFFFFFFF
            i += 1
        return out

    @staticmethod
    def _scope_span(address: int, remaining: int) -> int:
        """Words of a scope buffer from ``address`` on (up to the channel's end), or 0."""
        if address & 0xFFF00000 != SCOPE_BASE or address % 4:
            return 0
        offset = address & 0xFFFFF
        if not 0x10000 <= offset < 0x30000:
            return 0
        return min(remaining, (0x10000 - (offset & 0xFFFF)) >> 2)

    @staticmethod
    def _table_span(address: int, remaining: int) -> int:
        """Words of an ASG table from ``address`` on (up to the table's end), or 0."""
        if address & 0xFFF00000 != ASG_BASE or address % 4:
            return 0
        offset = address & 0xFFFFF
        if not 0x10000 <= offset < 0x30000:
            return 0
        return min(remaining, (0x10000 - (offset & 0xFFFF)) >> 2)

    def _decode(self, address: int):
        region = address & 0xFFF00000
        offset = address & 0x000FFFFF
        if region == HK_BASE:
            return self.hk, offset
        if region == SCOPE_BASE:
            return self.scope, offset
        if region == ASG_BASE:
            return self.asg_block, offset
        if region == DSP_BASE:
            return self.bus, address
        if region == AMS_BASE:
            return self.ams, offset
        return None, offset

    def _read_word(self, address: int) -> int:
        block, offset = self._decode(address)
        if block is None:
            log.debug("read of unmapped address %#010x", address)
            return 0
        return int(block.read(offset))

    def _write_word(self, address: int, value: int) -> None:
        block, offset = self._decode(address)
        if block is None:
            log.debug("write of %#x to unmapped address %#010x ignored", value, address)
            return
        block.write(offset, value)

    def _freeze_past(self) -> None:
        """Let the lazily evaluated blocks catch up before a write changes the signals."""
        now = self.clock.now()
        self.bus.blocks[3].update(now)  # type: ignore[attr-defined]
        self.scope.sync(now)

    def _pfd_before_write(self, address: int) -> None:
        """Bring the IQ modules' phase-frequency detectors to now before a write
        may change their signals: every watched one, and the one whose IQ
        module (or the sync register) is written (``pfd.py``)."""
        dsp = address & 0xFFF00000 == DSP_BASE
        slot = (address >> 16) & 0xF if dsp else -1
        sync = dsp and address & 0xFFFF == 0x0C
        now = None
        for n in (5, 6, 7):
            pfd = self.bus.blocks[n].pfd  # type: ignore[attr-defined]
            if pfd.on and (pfd.watched or slot == n or sync):
                now = self.clock.now() if now is None else now
                pfd.update(now)

    def _bump(self, routing: bool = True, drift: bool = False, tone: bool = False) -> None:
        """A write or a setting changed the signals (``version``); ``routing``: it may also
        have changed which PIDs move or how they are coupled (``_routing_version``:
        DSP registers, cables, plant), which a scope or ASG write cannot; ``drift``: only a
        drifting plant's time has moved on (``settings_version`` stays: no register or
        parameter changed); ``tone``: only an oscillator's frequency or phase changed
        (``loop_version`` stays: the PIDs' loop tables hold tones at one instant's values,
        which time moves just as much, ``pid.Pid.feedback_table``)."""
        self.version += 1
        if not drift:
            self.settings_version += 1
            if not tone:
                self.loop_version += 1
        if routing:
            self._routing_version += 1

    def _before_write(self, address: int, count: int) -> None:
        """What a write of ``count`` words from ``address`` needs before it is applied: the
        past kept (the lazily evaluated blocks, the PFDs) and the versions bumped, as far
        as the write can change the signals (:func:`_write_effect`; a block of words
        counts as the DSP bus if it reaches it, else as signals).  The scope's own
        registers need neither: it keeps its past itself."""
        if count == 1:
            effect = _write_effect(address)
        else:
            effect = "routing" if _reaches_dsp(address, count) else "signals"
        if effect == "none":
            return
        self._freeze_past()
        self._pfd_before_write(address)
        self._bump(routing=effect == "routing", tone=effect == "tone")

    # -- time ----------------------------------------------------------------------------
    @property
    def stepped_until(self) -> float:
        """Model time up to which the PID integrators have been stepped (read without the lock)."""
        return self._t_dyn

    def advance(self) -> None:
        """Step the PID integrators up to the current time."""
        with self.lock, self.clock.held():  # one access, one instant
            self._advance()

    def _advance(self) -> None:
        """:meth:`advance` for a caller that holds the lock and the instant (every bus access)."""
        now = self.clock.now()
        if self.dio.due(now) is not None:
            self._apply_pin_events(now)
        self._advance_to(now)

    def _apply_pin_events(self, now: float) -> None:
        """Apply the DIO0_P edges that have come (``dio.py``), each at its own time:
        the model is brought to that time first, so that the past keeps the state before it."""
        while (t := self.dio.due(now)) is not None:
            self._advance_to(t)
            self.bus.blocks[3].update(t)  # type: ignore[attr-defined]
            self.scope.sync(t)
            self._bump()
            self.dio.apply_next()

    def _advance_to(self, now: float) -> None:
        """Step the PID integrators to ``now`` (not before their last step)."""
        dt_total = now - self._t_dyn
        if dt_total <= 0:
            return
        if self.plant is not None and self.plant.time_varying:
            self._bump(False, drift=True)  # a drifting plant has changed since the last access, as a write would
        pids, rates, groups = self._active_pids()
        if not pids:
            self._t_dyn = now
            return
        dt_nom = min(1e-3, 0.5 / rates[0]) if rates else dt_total
        steps = min(MAX_STEPS, max(1, math.ceil(dt_total / max(dt_nom, 1e-8))))
        dt = dt_total / steps
        times = self._t_dyn + dt * np.arange(1, steps + 1)
        # Upstream first: a PID that another moving PID reaches sees that one's
        # trajectory (its recorded history), exactly.  A PID alone in its group
        # is stepped in one piece (its feedback table kept while the registers
        # stay and the PIDs reaching it have not moved, Pid.feedback_table);
        # PIDs that reach each other are stepped together (pid.advance_coupled).
        for group, upstream in groups:
            if len(group) == 1:
                group[0].advance(times, dt, upstream)  # type: ignore[attr-defined]
                continue
            # PIDs stepped together see each other's integrators one step late: their steps
            # stay at the nominal length for up to MAX_COUPLED_STEPS (a gap of 4 s at 1 ms)
            fine = min(MAX_COUPLED_STEPS, max(steps, math.ceil(dt_total / max(dt_nom, 1e-8))))
            if fine == steps:
                advance_coupled(group, times, dt)
            else:
                advance_coupled(group, self._t_dyn + (dt_total / fine) * np.arange(1, fine + 1), dt_total / fine)
        self._t_dyn = now

    def _active_pids(self) -> tuple[list[Any], list[float], list[tuple[list[Any], list[Any]]]]:
        """The PIDs that move, fastest integrator first, and their integrator rates;
        then the order to step them in: groups of PIDs that reach each other's
        inputs (strongly connected through the routing), upstream groups first,
        fastest first within a group, each with the moving PIDs outside it
        that reach it.

        Which PIDs move and how the routing couples them depends on the DSP
        registers, the cables and the plant only, so the answer is kept until
        one of them changes (``_routing_version``; a scope curve's writes keep
        it): every register access asks.
        """
        cached = self._pid_cache
        if cached is not None and cached[0] == self._routing_version:
            return cached[1], cached[2], cached[3]
        # fastest integrator first: the slower ones then see its trajectory, not its old value
        pids = sorted((b for n, b in self.bus.blocks.items() if n < 3 and b.active()),  # type: ignore[attr-defined]
                      key=lambda b: -abs(b.i_rate))  # type: ignore[attr-defined]
        rates = [abs(p.i_rate) for p in pids if p.i_rate]  # type: ignore[attr-defined]  # descending, as pids
        numbers = {p.number for p in pids}
        # upstream[n]: the moving PIDs whose outputs may reach PID n's input (conservative)
        upstream = {p.number: (self.bus.upstream_modules(p.number) - {p.number}) & numbers for p in pids}
        groups: list[tuple[list[Any], list[Any]]] = []
        left = list(pids)
        while left:
            # a PID none of the remaining ones reaches unless it reaches them back: its group goes next
            for p in left:
                group = [q for q in left if q is p or (q.number in upstream[p.number] and p.number in upstream[q.number])]
                members = {q.number for q in group}
                outside = {q.number for q in left} - members
                if not any(upstream[q.number] & outside for q in group):
                    break
            else:  # pragma: no cover - the reaching relation is transitive, so some group has no upstream left
                group, members = list(left), {q.number for q in left}
            reaching = set().union(*(upstream[q.number] for q in group)) - members
            groups.append((group, [q for q in pids if q.number in reaching]))
            left = [q for q in left if q.number not in members]
        self._pid_cache = (self._routing_version, pids, rates, groups)
        return pids, rates, groups

    # -- conveniences for tests (all thread-safe) -----------------------------------------------
    def attach_plant(self, plant: Any) -> None:
        """Wire ``plant`` (a :class:`rpl_noqt.sim.plants.Plant`) behind the outputs, or None for the cables."""
        with self.lock, self.clock.held():  # one access, one instant
            self.advance()
            self._freeze_past()
            self._bump()
            if plant is not None:
                plant.attach(self)
            self.plant = plant

    def set_external_trigger(self, level: bool) -> None:
        """Set the level of what is connected to DIO0_P, the external trigger input, from now on.

        The generators' ``ext_positive_edge``/``ext_negative_edge``/``ext_raw``
        trigger sources see it (``dio.py``: 2 cycles after a software trigger
        would, debounced 0.5 ms per direction as in ``red_pitaya_asg_ch.v``);
        ``hk.expansion_P0`` reads it while the pin is an input.  A pin that
        housekeeping drives as an output ignores it.
        """
        if not isinstance(level, bool | int) or level not in (0, 1):
            raise ValueError(f"external trigger level must be True/False (or 1/0), got {level!r}")
        with self.lock, self.clock.held():  # one access, one instant
            self._advance()
            before = self.dio.pin()
            self.dio.external = bool(level)
            if self.dio.pin() != before:
                self.dio.schedule(self.clock.now(), bool(level))

    def pulse_external_trigger(self, width: float = 1e-6) -> None:
        """A high pulse of ``width`` seconds (8 ns to 10 s) on DIO0_P from now: a rising then a falling edge."""
        if not isinstance(width, int | float) or not math.isfinite(width) or not 8e-9 <= width <= 10.0:
            raise ValueError(f"pulse width must be between 8e-9 and 10 s, got {width!r}")
        with self.lock, self.clock.held():  # one access, one instant
            self._advance()
            if self.dio.pin():
                raise ValueError("DIO0_P is already high: a pulse needs it low (set_external_trigger(False))")
            now = self.clock.now()
            self.dio.schedule(now, True)
            self.dio.schedule(now + width, False)

    def set_input_range(self, channel: int, value: str) -> None:
        """The input range jumper of in<channel>: ``"LV"`` (+-1 V, the default, what PyRPL assumes)
        or ``"HV"`` (+-20 V: the ADC sees 1/20 of the connector's voltage), ``analog.py``."""
        with self.lock, self.clock.held():  # one access, one instant
            self.advance()
            self._freeze_past()
            self._bump()
            self.analog.set_input_range(channel, value)

    def set_rolloff(self, enabled: bool = True, **bandwidths: float) -> Rolloff | None:
        """Switch the front end's roll-off near Nyquist on (``adc_bandwidth``, ``dac_bandwidth``:
        -3 dB frequencies, default 50 MHz each) or off (flat, the default), ``analog.py``."""
        if not isinstance(enabled, bool):
            raise ValueError(f"enabled must be True or False, got {enabled!r}")
        if not enabled and bandwidths:
            raise ValueError("bandwidths only apply with enabled=True")
        unknown = set(bandwidths) - {"adc_bandwidth", "dac_bandwidth"}
        if unknown:
            raise ValueError(f"unknown rolloff setting(s) {sorted(unknown)}; allowed: adc_bandwidth, dac_bandwidth")
        rolloff = Rolloff(**bandwidths) if enabled else None
        with self.lock, self.clock.held():  # one access, one instant
            self.advance()
            self._freeze_past()
            self._bump()
            self.analog.rolloff = rolloff
            return rolloff

    def set_loopback(self, channel: int = 1, **settings: float) -> Loopback:
        """Change the out<n> -> in<n> cable: ``gain``, ``offset`` (V), ``noise`` (V rms), ``delay`` (s)."""
        with self.lock, self.clock.held():  # one access, one instant
            self.advance()
            self._freeze_past()
            self._bump()
            return self.analog.set_loopback(channel, **settings)

    def inject_tone(
        self,
        channel: int,
        frequency: float,
        amplitude: float,
        phase_deg: float = 0.0,
        reference: str | None = None,
    ) -> int:
        """Add ``amplitude * sin(2 pi f t + phase)`` to input ``channel`` (1 or 2).

        Without ``reference`` the phase refers to model time 0.  With
        ``reference='iq0'`` (or iq1/iq2) it refers to that module's local
        oscillator as it runs now: an IQ module demodulating at the same
        frequency then reports exactly ``phase_deg`` (like a generator locked to
        the Red Pitaya's reference).  Returns an id for :meth:`remove_tone`.
        """
        with self.lock, self.clock.held():  # one access, one instant
            self.advance()
            origin = 0.0
            if reference is not None:
                if reference not in ("iq0", "iq1", "iq2"):
                    raise ValueError(f"tone reference must be None, 'iq0', 'iq1' or 'iq2', got {reference!r}")
                iq = self.bus.blocks[_SLOTS[reference]]
                now = self.clock.now()
                origin = float(iq.theta(now)) - 2 * math.pi * frequency * now  # type: ignore[attr-defined]
            self._freeze_past()
            return self.analog.add_tone(channel, frequency, amplitude, phase_deg, origin)

    def remove_tone(self, tone_id: int | None = None) -> None:
        """Remove one injected tone (or all with ``None``)."""
        with self.lock, self.clock.held():  # one access, one instant
            self.analog.remove_tone(tone_id)

    def signal(self, name: str) -> float:
        """Current value (V) of a DSP signal by PyRPL name ('in1', 'pid0', 'asg0', ...)."""
        if name not in _SLOTS:
            raise ValueError(f"unknown signal {name!r}; allowed: {sorted(_SLOTS)}")
        with self.lock, self.clock.held():  # one access, one instant
            self.advance()
            ctx = EvalContext(self.rng)
            return float(self.bus.signal(_SLOTS[name], np.array([self.clock.now()]), ctx)[0])

    def cycles(self, t: float | None = None) -> int:
        """The FPGA's 64-bit cycle counter at model time ``t`` (default: now), counted from its load."""
        return self.clock.cycles((self.clock.now() if t is None else t) - self.loaded_at)

    def reset(self) -> None:
        """Power-cycle (reload) the FPGA: every register back to its reset value, the cycle counter to 0."""
        with self.lock, self.clock.held():  # one access, one instant
            self._build()
            self.loaded_at = self.clock.now()
