"""The live instrument engine: events, timbre, presets, the note cache, the render worker and
its render process, the voice mixer, `Instrument` (instrument.py) and the offline driver.

Imports `engine.gansynth` and `engine.util` only; devices, songs, commands and the GUI build
on it.
"""
