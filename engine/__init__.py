"""GANSynth instrument engine: everything except the Qt window.

Never imports PySide6, pyqtgraph or `app`.
"""
from engine.gansynth.modelfile import ModelFileError
from engine.gansynth.synth import Synth, load_synth

__all__ = ["load_synth", "Synth", "ModelFileError"]
