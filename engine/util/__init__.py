"""Small helpers under every wing: atomic file writes and the one guarded JSON reader
(`fileio`), paths of the bundled resources (`resources`).

Imports nothing from `engine`; every wing may import it.
"""
