"""`Instrument`: the engine's live face (SKELETON: API stable, internals being filled in).

    inst = Instrument(synth, sample_rate=48000)
    inst.start()                      # render worker
    inst.post(NoteOn(60, 100))        # any thread
    block = inst.process(256)         # audio thread: float32 [256], valid until next call
"""
from __future__ import annotations

import collections
import threading

import numpy as np

from engine.events import PadMove, SetParam, validate
from engine.timbre import TimbreState

# name -> (default, lo, hi) for numeric settings; strings/bools listed separately.
PARAMS: dict[str, tuple] = {
    "attack_s": (0.005, 0.001, 4.0),
    "decay_s": (0.3, 0.001, 4.0),
    "sustain": (1.0, 0.0, 1.0),
    "release_s": (0.3, 0.001, 10.0),
    "volume": (0.5, 0.0, 1.0),
    "velocity_curve": (1.0, 0.25, 4.0),
    "velocity_floor": (0.0, 0.0, 1.0),
    "polyphony": (64, 1, 256),
    "bend_range": (2.0, 0.0, 24.0),
    "morph_held": (True, None, None),
    "mod_axis": ("y", None, None),  # "x" | "y" | "none"
}


class Settings:
    """Current instrument settings; assigning an attribute posts a SetParam event."""

    def __init__(self, instrument: "Instrument"):
        object.__setattr__(self, "_inst", instrument)
        object.__setattr__(self, "_values", {k: v[0] for k, v in PARAMS.items()})

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self._inst.post(SetParam(name, value))

    def as_dict(self) -> dict:
        return dict(self._values)


class Instrument:
    def __init__(self, synth, sample_rate: int = 48000, cache_mb: float = 512, max_voices: int = 64,
                 render_threads: int = 1, timbre: TimbreState | None = None, seed: int = 0):
        self.synth = synth
        self.sample_rate = int(sample_rate)
        self.cache_mb = cache_mb
        self.max_voices = max_voices
        self.render_threads = render_threads
        self._timbre = timbre or TimbreState.random(synth, seed)
        self._timbre_lock = threading.Lock()
        self._events = collections.deque()
        self._out = np.zeros(8192, np.float32)
        self.settings = Settings(self)

    # ---- any thread ----
    def post(self, event) -> None:
        event = validate(event)
        if isinstance(event, PadMove):
            with self._timbre_lock:
                self._timbre = self._timbre.with_pad(event.x, event.y)
        if isinstance(event, SetParam):
            self.settings._values[event.name] = event.value
        self._events.append(event)

    # ---- audio thread ----
    def process(self, frames: int) -> np.ndarray:
        while self._events:
            self._events.popleft()
        out = self._out[:frames]
        out.fill(0.0)
        return out

    # ---- GUI thread ----
    @property
    def timbre(self) -> TimbreState:
        return self._timbre

    def set_corner(self, i: int, latent, name: str, colour: str | None = None) -> None:
        with self._timbre_lock:
            self._timbre = self._timbre.with_corner(i, latent, name, colour)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def load_preset(self, path) -> None:
        raise NotImplementedError

    def save_preset(self, path) -> None:
        raise NotImplementedError

    def swap_model(self, synth) -> None:
        self.synth = synth

    def stats(self) -> dict:
        return {"cache_hits": 0, "cache_misses": 0, "cache_fill": 0.0, "render_progress": 0.0,
                "voices": 0}
