"""The `gansynth` console script (`cli.py`) and its subcommands, one module each.

The top of the engine: may import every wing. `engine.training` and `app` are reached only
by name, through the CLI's lazy dispatch of their subcommands.
"""
