"""Live audio output: a sounddevice stream (or our own JACK client), with the paced offline clock
(engine/devices/clock.py) taking over when there is no device; engine/devices/listing.py
lists the devices.

    out = AudioOutput(instrument, device="system")   # name or substring; None = default
    out.open()            # True: a device plays; False: running on the offline clock (see last_error)
    out.post(NoteOn(60, 100))                        # forwards to the instrument, timestamps for the recorder
    out.xruns, out.cpu_load, out.latency_ms, out.last_error, out.mode   # meters
    out.tap.scope(2048), out.tap.levels()            # newest samples, (peak, rms) since last read
    out.reopen("other device"); out.close()

Thread model (the whole engine's; see also engine/instrument/instrument.py):
- GUI / main thread: opens, closes, reopens outputs; reads meters and the tap; posts events.
  May block (device open/close), never inside the callback.
- Render worker (the instrument's): renders notes with torch; never touches the stream.
- The audio producer: the only caller of `instrument.process(frames)`, which it pushes into
  the tap (scope ring, level, recorder ring). No locks, no logging, no file I/O, no Qt; an
  exception becomes silence plus `callback_errors`. Which thread that is:
  - a device (`ahead` >= 1, the default): the "audio-ahead" thread (engine/devices/ahead.py)
    renders `ahead` periods ahead into a ring; the device's thread (PortAudio's, or our JACK
    client's process thread) runs only a C callback that copies the ring to the device
    and never takes the GIL;
  - `ahead=0`: the device's own callback thread, in its period;
  - no device: the clock thread (`OfflineClockOutput`).
  Xruns: blocks the device or the ring could not fill, and the device's underflow flags.
- MIDI callback (rtmidi's thread): translates messages and calls `post`; nothing else.
- Recorder writer: drains the recorder ring to disk (engine/devices/recorder.py).
- Watchdog (one per AudioOutput): every 0.25 s checks the stream is alive. A stall (no
  callback for `stall_s`) is counted and shown in `last_error` while it lasts; a stream
  that stopped by itself, or stalled for `lost_s`, is lost: reported in `last_error` and,
  with `fallback=True`, the clock takes over so the instrument (and a recording) keeps
  running. `reopen()` tries a device again. Once a stream, it asks whether the callback
  thread is realtime-scheduled and tells the instrument (`audio_thread_realtime`: with it,
  a render process per core; without, one core is left to the audio); one that is not is
  raised to SCHED_FIFO where permitted (`_tell_realtime`).

Cross-thread data: events go through the instrument's queue; meters are plain attributes
(latest-value); the scope is a ring guarded by a sequence counter; the recorder ring is a
single-producer single-consumer ring. Event timestamps (`post`) are the output frame at
which the next block starts, i.e. exact to one block.
"""
from __future__ import annotations

import gc
import sys
import threading
import time

from engine.devices.ahead import MAX_PERIODS, AheadRing
from engine.devices.clock import OfflineClockOutput, OutputBase
from engine.devices.jackclient import JACK_CLIENT_HOSTAPI
from engine.devices.jackthreads import raise_jack_threads, raise_thread, raised_threads, realtime_as_given
from engine.devices.listing import (AudioDeviceError, find_output_device, import_sounddevice, jack_server_lost,
                                    refresh_devices)

GIL_SWITCH_S = 0.00005  # the GIL hand-over interval while a stream runs (Python's default: 5 ms); see open()
STALL_S = 0.5          # no callback for this long: reported as a stall (the stream is kept)
LOST_S = 3.0           # no callback (or only underflows) for this long: the device is lost
WATCHDOG_S = 0.25
FIRST_BLOCK_WAIT_S = 0.2   # open() waits this long at most for the first callback, to raise its thread
CALLBACK_RT_PRIORITY = 1   # SCHED_FIFO priority a plain callback thread is raised to (1..99)
REAP_WAIT_S = 2.0      # reopen waits this long for a lost stream's close to return
# periods rendered ahead of a C device callback (0: a Python callback); the ring wakes its
# producer with an eventfd, which only Linux has
AHEAD_PERIODS = 1 if sys.platform.startswith("linux") else 0


_open_streams = 0          # streams of this process not yet closed (refresh only when 0)
_stuck_hostapis: dict[str, int] = {}   # host API -> streams PortAudio is still failing to close
_stuck_lock = threading.Lock()


def stuck_hostapis() -> list[str]:
    """Host APIs with a lost stream PortAudio has not released (e.g. a JACK server that died:
    PortAudio 19.6 waits up to 10 minutes); their devices cannot be reopened until then."""
    return [name for name, n in _stuck_hostapis.items() if n > 0]


class AudioOutput(OutputBase):
    """The instrument on a sounddevice output stream, with the offline clock as fallback.

    `device`: name or unique substring (None = PortAudio's default output). The stream
    runs at the instrument's sample rate (build the instrument at `device_sample_rate()`),
    `latency='low'` and `block_size=0` (the device's own period) by default, on
    `channels` channels (default: up to 2), every channel the same mono signal.

    `ahead`: how many device periods a producer thread renders ahead of a C callback that
    plays them without the GIL (engine/devices/ahead.py), for that much more latency; 0 calls
    the instrument from a Python callback in the device's own period (lowest latency, and our
    JACK client's MIDI sounds in the very cycle that delivers it, but every wait for the GIL
    comes out of the deadline).
    """

    def __init__(self, instrument, device: str | None = None, sample_rate: int | None = None,
                 latency="low", block_size: int = 0, channels: int | None = None,
                 fallback: bool = True, midi_channel: int | None = None, ahead: int | None = None):
        super().__init__(instrument)
        if sample_rate is not None and int(sample_rate) != self.sample_rate:
            raise ValueError(f"the instrument renders at {self.sample_rate} Hz, not {sample_rate} Hz; "
                             f"build it at the device's rate (engine.devices.listing.device_sample_rate)")
        self.device = device
        self.latency = latency
        self.block_size = int(block_size)
        self.channels = channels
        self.fallback = fallback
        self.midi_channel = midi_channel  # the JACK client's MIDI in: one channel 0..15, None = all
        self.ahead = AHEAD_PERIODS if ahead is None else int(ahead)
        if not 0 <= self.ahead <= MAX_PERIODS:
            raise ValueError(f"periods rendered ahead must be 0..{MAX_PERIODS}, not {ahead}")
        self.mode = "closed"          # "device" | "clock" | "closed"
        self.device_name = ""
        self.last_error = ""
        self.device_losses = 0
        self.stalls = 0               # callback gaps longer than stall_s
        self.stall_s = STALL_S
        self.lost_s = LOST_S
        self._xruns = 0
        self._late_blocks = 0
        self._midi_messages = 0       # MIDI received by closed streams (our JACK client's midi_in)
        self._underflow_run = 0
        self._last_frames = 0
        self._stream = None
        self._ring: AheadRing | None = None   # the stream renders ahead (PortAudio, ahead > 0)
        self._hostapi = ""
        self._reapers: list[threading.Thread] = []
        self._clock: OfflineClockOutput | None = None
        self._gen = 0                 # bumps on every open/close: stale callbacks go silent
        self._finished_gen = -1
        self._lock = threading.RLock()  # GUI thread vs watchdog
        self._changed = threading.Condition()   # notified when `mode` changes (never by the callback)
        self._watch_stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self.callback_tid = 0         # the stream's callback thread (0 until its first block)
        self.callback_realtime: bool | None = None   # was it SCHED_FIFO/RR (the watchdog asks once)
        self.callback_raised = False  # we made it SCHED_FIFO (it was not; permitted)
        self.jack_threads_raised = 0  # libjack threads of this process raised with it (engine.devices.jackthreads)

    # ---- meters (any thread) ----
    @property
    def jack_midi_port(self) -> str:
        """Our JACK client's MIDI in ("GANSynth:midi_in") while it is the device, else ""."""
        return getattr(self._stream, "midi_port_name", "")

    @property
    def xruns(self) -> int:
        clock, ring = self._clock, self._ring
        return self._xruns + (clock.xruns if clock is not None else 0) + (ring.xruns if ring is not None else 0)

    @property
    def late_blocks(self) -> int:
        """Of `xruns`, periods our render thread was late for (the ring ran short); the device or
        the JACK server flagged the rest (another thread was late). 0 without a ring."""
        ring = self._ring
        return self._late_blocks + (ring.short_blocks if ring is not None else 0)

    @property
    def midi_messages(self) -> int:
        """MIDI messages the output's own MIDI in received (our JACK client; 0 for PortAudio)."""
        return self._midi_messages + getattr(self._stream, "midi_messages", 0)

    @property
    def cpu_load(self) -> float:
        stream, clock, ring = self._stream, self._clock, self._ring
        if ring is not None:                  # the producer's share of each period
            return ring.load
        if stream is not None:
            return float(stream.cpu_load)
        return clock.cpu_load if clock is not None else 0.0

    @property
    def latency_ms(self) -> float:
        """Output latency the device reports (s -> ms), plus what is rendered ahead; one block on the clock."""
        stream, clock = self._stream, self._clock
        if stream is not None:
            return 1000.0 * float(stream.latency) + self.ahead_ms
        return clock.latency_ms if clock is not None else 0.0

    @property
    def ahead_ms(self) -> float:
        """What the output renders ahead of the device (part of `latency_ms`); 0 without a ring."""
        ring = self._ring
        return 1000.0 * ring.ahead_frames / self.sample_rate if ring is not None else 0.0

    @property
    def block_frames(self) -> int:
        """Frames in the last block the device asked for (its period when block_size=0)."""
        if self._stream is None and self._clock is not None:
            return self._clock.block_size
        ring = self._ring
        return ring.last_frames if ring is not None else self._last_frames

    def meters(self) -> dict:
        return {"mode": self.mode, "device": self.device_name, "sample_rate": self.sample_rate,
                "block_size": self.block_frames, "latency_ms": self.latency_ms, "xruns": self.xruns,
                "late_blocks": self.late_blocks,
                "cpu_load": self.cpu_load, "last_error": self.last_error,
                "callback_errors": self.callback_errors, "device_losses": self.device_losses,
                "stalls": self.stalls, "midi_messages": self.midi_messages,
                "callback_realtime": self.callback_realtime, "callback_raised": self.callback_raised,
                "jack_threads_raised": self.jack_threads_raised}

    # ---- control (GUI thread) ----
    def open(self) -> bool:
        """Open the device; True if it plays. Otherwise (fallback) the clock runs: see last_error.

        Also readies the interpreter for a callback that needs the GIL every period:
        - shortens the GIL switch interval to GIL_SWITCH_S (50 us). The callback gives the GIL
          up several times a block (every cffi call into JACK or PortAudio, numpy on more than
          500 elements), and while another thread runs Python each take-back waits one
          interval. Measured (python -m benchmarks.contention, 16 held voices, JACK dummy,
          beside 2 CPU-bound Python threads such as the window painting or a take's MIDI file
          being written, 10 s): 5 ms (Python's default) 342-445 xruns; 0.5 ms 22-81; 50 us 0,
          process() p99 ~1 ms. The busy threads ran no slower;
        - collects, then freezes every object alive now (modules, torch, Qt, the model)
          out of the collector's reach: a full collection over them held the GIL for
          ~50 ms mid-performance (measured with gc.callbacks), 10 blocks of silence."""
        if sys.getswitchinterval() > GIL_SWITCH_S:
            sys.setswitchinterval(GIL_SWITCH_S)
        gc.collect()
        gc.freeze()
        with self._lock:
            self._shut()
            try:
                self._open_device()
            except AudioDeviceError as e:
                self._use_clock(str(e))
                return False
            self.last_error = ""
            self._raise_at_first_block()
            self._start_watchdog()
            return True

    def reopen(self, device: str | None = ..., rescan: bool = True) -> bool:
        """Close, optionally choose another device (None = default), re-scan devices, open."""
        with self._lock:
            if device is not ...:
                self.device = device
            self._shut()
            for reaper in self._reapers:      # a lost stream may just be finishing its close
                reaper.join(timeout=REAP_WAIT_S)
            self._reapers = [r for r in self._reapers if r.is_alive()]
            if rescan and _open_streams == 0 and not stuck_hostapis():
                try:
                    refresh_devices()
                except Exception as e:  # PortAudio refused: keep the old device list
                    self.last_error = f"could not re-scan audio devices: {e}"
            return self.open()

    def close(self) -> None:
        with self._lock:
            self._shut()
            self._set_mode("closed")
        self._watch_stop.set()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout=2.0)
        self._watchdog = None

    # ---- internals ----
    def _open_device(self) -> None:
        global _open_streams
        sd = import_sounddevice()
        dev = find_output_device(self.device)
        if dev.hostapi in stuck_hostapis():
            raise AudioDeviceError(f"audio output {dev.name!r} ({dev.hostapi}) was lost and PortAudio has "
                                   f"not released it yet; choose a device of another host API or "
                                   f"restart the program")
        channels = self.channels or min(2, dev.channels)
        self._gen += 1
        gen = self._gen
        jack_client = dev.hostapi == JACK_CLIENT_HOSTAPI
        ring = None
        try:
            if self.ahead > 0:      # our JACK client's C callback copies one mono ring to every port
                ring = AheadRing(self._render, self.sample_rate, 1 if jack_client else channels, self.ahead,
                                 default_period=self.block_size or 256, realtime_priority=CALLBACK_RT_PRIORITY,
                                 on_error=self._count_error)
            if jack_client:
                from engine.devices.jackclient import JackStream

                stream = JackStream(self.sample_rate, channels, self._make_callback(gen),
                                    self._make_finished(gen), self.post, self.midi_channel,
                                    on_server_lost=jack_server_lost, ring=ring)
            elif ring is not None:
                stream = ring.open_stream(sd, device=dev.index, samplerate=self.sample_rate, latency=self.latency,
                                          blocksize=self.block_size, finished_callback=self._make_finished(gen))
            else:
                stream = sd.OutputStream(device=dev.index, samplerate=self.sample_rate, channels=channels,
                                         dtype="float32", latency=self.latency, blocksize=self.block_size,
                                         callback=self._make_callback(gen),
                                         finished_callback=self._make_finished(gen))
        except Exception as e:  # PortAudioError, ValueError, JackUnavailable: the message says why
            if ring is not None:
                ring.close()
            msg = f"cannot open audio output {dev.name!r} at {self.sample_rate} Hz: {e}"
            if dev.default_sample_rate and int(dev.default_sample_rate) != self.sample_rate:
                msg += (f" (the device runs at {dev.default_sample_rate:.0f} Hz: start the "
                        f"instrument at that rate)")
            raise AudioDeviceError(msg) from None
        _open_streams += 1
        self._hostapi = dev.hostapi
        try:
            if ring is not None:
                ring.start()                  # primed before the first callback
            stream.start()
        except Exception as e:  # PortAudioError, or a JACK activation/connection error
            self._dispose(stream, ring)
            raise AudioDeviceError(f"cannot start audio output {dev.name!r}: {e}") from None
        self._stream, self._ring = stream, ring
        self._underflow_run = 0
        self.device_name = dev.name
        self._set_mode("device")

    def wait_mode(self, mode: str, timeout: float) -> bool:
        """Block until `mode` is "device", "clock" or "closed" (scripts, tests)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.mode == mode, timeout)

    def _set_mode(self, mode: str) -> None:
        self.mode = mode
        with self._changed:
            self._changed.notify_all()

    def _make_callback(self, gen: int):
        def callback(outdata, frames, time_info, status):
            if gen != self._gen:              # an abandoned stream: stay silent
                outdata.fill(0.0)
                return
            if not self.callback_tid:         # once a stream: who calls us (the watchdog looks)
                self.callback_tid = threading.get_native_id()
            if status.output_underflow:
                self._xruns += 1
                self._underflow_run += 1
            else:
                self._underflow_run = 0
            self._last_frames = frames
            try:
                outdata[:] = self._render(frames)[:, None]
            except Exception as e:            # starvation is silence plus a count
                outdata.fill(0.0)
                self._count_error(e)
        return callback

    def _count_error(self, e: BaseException) -> None:
        self.callback_errors += 1
        self.callback_error = e

    def _make_finished(self, gen: int):
        def finished():
            self._finished_gen = gen          # the watchdog decides whether it was expected
        return finished

    def _use_clock(self, reason: str) -> None:
        if not self.fallback:
            self._set_mode("closed")
            self.device_name = ""
            self.last_error = reason
            return
        self._clock = OfflineClockOutput(self.instrument, tap=self.tap)
        self._clock.recorder = self.recorder
        self._clock.start()
        self._set_mode("clock")
        self.device_name = self._clock.name
        self.last_error = f"{reason}; playing on the offline clock (no sound, recording works)"

    def _shut(self) -> None:
        """Stop whatever runs now (lock held)."""
        self._gen += 1
        stream, self._stream = self._stream, None
        ring, self._ring = self._ring, None
        if ring is not None:
            ring.stop()
            self._xruns += ring.xruns
            self._late_blocks += ring.short_blocks
        if stream is not None:
            self._midi_messages += getattr(stream, "midi_messages", 0)
            self._dispose(stream, ring)
        self.callback_tid, self.callback_realtime, self.callback_raised = 0, None, False
        clock, self._clock = self._clock, None
        if clock is not None:
            self._xruns += clock.xruns
            clock.stop()

    def _dispose(self, stream, ring: AheadRing | None = None, timeout: float = 0.5) -> None:
        """Abort and close a stream off this thread; never blocks longer than `timeout`.

        A stream PortAudio cannot close (a dead JACK server) marks its host API stuck
        until the close returns. Its ring lives as long as that (its callback may run)."""
        global _open_streams
        hostapi = self._hostapi
        state = {"done": False, "stuck": False}

        def reap():
            try:
                stream.abort(ignore_errors=True)
                stream.close(ignore_errors=True)
            except Exception:
                pass
            if ring is not None:
                ring.close()
            with _stuck_lock:
                state["done"] = True
                if state["stuck"]:
                    _stuck_hostapis[hostapi] -= 1

        reaper = threading.Thread(target=reap, name="audio-reaper", daemon=True)
        reaper.start()
        self._reapers.append(reaper)
        _open_streams -= 1
        reaper.join(timeout)
        with _stuck_lock:
            if not state["done"]:
                state["stuck"] = True
                _stuck_hostapis[hostapi] = _stuck_hostapis.get(hostapi, 0) + 1

    def _start_watchdog(self) -> None:
        if self._watchdog is not None and self._watchdog.is_alive():
            return
        self._watch_stop.clear()
        self._watchdog = threading.Thread(target=self._watch, name="audio-watchdog", daemon=True)
        self._watchdog.start()

    def _raise_at_first_block(self) -> None:
        """Settle the callback thread's priority at its first block, before open() returns (the
        watchdog would, a period of its own later). Until then a plain JACK server runs it, and
        the JACK threads beside it, as ordinary threads, and the caller's next step is to start
        the instrument: its render process and threads. Measured on 2 cores, plain jackd, the
        instrument started and the output opened at once (benchmarks.startup): a client of ours
        late ("client = GANSynth/PortAudio was not finished") in 10 of 144 starts when the
        watchdog raised it, 0 of 144 raised here."""
        deadline = time.monotonic() + FIRST_BLOCK_WAIT_S
        self._settle_priorities()
        while self.callback_realtime is None and time.monotonic() < deadline:
            time.sleep(0.002)
            self._settle_priorities()

    def _settle_priorities(self) -> None:
        """Once the callback thread is known (its first block), whether it is realtime as given
        (raised where not: `_tell_realtime`); while we raise it, libjack's threads too (clients
        made since the last call). open() calls it until settled, the watchdog every period."""
        if self._ring is not None and not self.callback_tid:
            self.callback_tid = self._ring.callback_tid
        if self.callback_tid and self.callback_realtime is None:
            self._tell_realtime(self.callback_tid)
        if self.callback_raised:   # a JACK server that is not realtime: its other clients of ours too
            self.jack_threads_raised += raise_jack_threads(CALLBACK_RT_PRIORITY)

    def _watch(self) -> None:
        last_frames, last_change = self.tap.frames, time.monotonic()
        stalled = False
        while not self._watch_stop.wait(WATCHDOG_S):
            now, frames = time.monotonic(), self.tap.frames
            if frames != last_frames or self.mode != "device":
                last_frames, last_change = frames, now
            if self.mode != "device":
                continue
            self._settle_priorities()
            ring = self._ring
            quiet_s = now - last_change
            if stalled and quiet_s == 0.0:
                stalled = False
                if self.last_error.startswith("audio output stalled"):
                    self.last_error = ""
            block_s = max(self.block_frames, 1) / self.sample_rate
            underflow_run = ring.underflow_run if ring is not None else self._underflow_run
            if self._finished_gen == self._gen:
                self._lost("its stream stopped")
            elif quiet_s > self.lost_s:
                self._lost(f"no audio callback for {quiet_s:.1f} s")
            elif underflow_run * block_s > self.lost_s:
                self._lost(f"every block underflowed for {self.lost_s:.1f} s")
            elif quiet_s > self.stall_s and not stalled:
                stalled = True
                self.stalls += 1
                self.last_error = (f"audio output stalled: no callback from {self.device_name!r} "
                                   f"for {quiet_s:.1f} s")

    def _tell_realtime(self, tid: int) -> None:
        """Once a stream: is its callback thread realtime-scheduled as the audio system gave it
        (SCHED_FIFO/RR: jackd -R, PortAudio's ALSA thread where permitted)? The instrument is
        told (`Instrument.audio_thread_realtime`: how many render processes). If it is not, it
        is raised to SCHED_FIFO at CALLBACK_RT_PRIORITY where permitted: above the renders and
        the window, below an audio server's own realtime threads. Measured on 2 cores with a
        plain jackd (benchmarks.live, 60 s, 1 render process): 6 xruns as given, 2 raised."""
        realtime = realtime_as_given(tid)
        if not realtime:   # raised now, or by us for an earlier stream on the same thread
            self.callback_raised = raise_thread(tid, CALLBACK_RT_PRIORITY) or tid in raised_threads()
        self.callback_realtime = realtime
        tell = getattr(self.instrument, "audio_thread_realtime", None)
        if tell is not None:
            tell(realtime)

    def _lost(self, why: str) -> None:
        with self._lock:
            if self.mode != "device":
                return
            name = self.device_name
            self.device_losses += 1
            self._shut()
            self._use_clock(f"audio output {name!r} was lost ({why}); reopen it or choose "
                            f"another device")
