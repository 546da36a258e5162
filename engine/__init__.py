"""GANSynth instrument engine: everything except the Qt window.

Never imports PySide6, pyqtgraph or `app`.
"""
from engine.modelfile import ModelFileError
from engine.synth import Synth, load_synth

__all__ = ["load_synth", "Synth", "ModelFileError"]
