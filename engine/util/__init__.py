"""Small helpers under every wing: atomic file writes (`fileio`), paths of the bundled
resources (`resources`).

Imports nothing from `engine`; every wing may import it.
"""
