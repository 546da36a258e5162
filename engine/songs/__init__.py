"""Whole pieces, offline: MIDI files in, rendered songs out, SFZ sampler patches.

Imports `engine.instrument`, `engine.gansynth` and `engine.util`; never `engine.devices`.
"""
