"""Training-side code: NSynth-format datasets, SoundFont renders, feature cache, trainer, eval.

Imports `engine.gansynth` and `engine.util` only. Nothing at run time (synth, mixer, audio,
GUI) imports this package; the CLI reaches its subcommands by name.
"""
