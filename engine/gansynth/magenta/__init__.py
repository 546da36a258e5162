"""Magenta GANSynth checkpoints without TensorFlow: the TF V2 checkpoint reader, the mapping of
Magenta's variables onto our `Generator`, the official downloads.

Imports `engine.gansynth` and `engine.util` only.
"""
