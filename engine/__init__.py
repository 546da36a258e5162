"""GANSynth instrument engine: everything except the Qt window, in wings that import one way
(docs/ARCHITECTURE.md): util <- gansynth <- instrument <- devices / songs <- commands;
training builds on gansynth.

Never imports PySide6, pyqtgraph or `app`. Re-exports the model's public face.
"""
from engine.gansynth.modelfile import ModelFileError
from engine.gansynth.synth import Synth, load_synth

__all__ = ["load_synth", "Synth", "ModelFileError"]
