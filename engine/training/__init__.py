"""Training-side code: NSynth-format datasets, SoundFont renders, feature cache, trainer, eval.

Nothing at run time (synth, mixer, audio, GUI) imports this package.
"""
