"""Live I/O: audio outputs (a sounddevice stream, our own JACK client, the offline clock),
the output device list, MIDI input, the recorder and performance MIDI files.

Imports `engine.instrument`, `engine.gansynth` and `engine.util`; never `engine.songs`.
"""
