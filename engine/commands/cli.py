"""`gansynth` console script.

Each subcommand lives in its own module exposing `add_arguments(parser)` and
`run(args) -> int`; only the chosen module is imported, so `gansynth devices`
never loads torch and `gansynth train` never loads Qt.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "gui": ("app.main", "open the instrument window (the default)"),
    "generate": ("engine.commands.generate", "write WAVs of random instruments"),
    "import-magenta": ("engine.commands.import_magenta", "convert a Magenta GANSynth checkpoint to model files"),
    "download": ("engine.commands.download", "download and import an official GANSynth checkpoint"),
    "make-dataset": ("engine.training.soundfont", "render an NSynth-format dataset from a SoundFont"),
    "train": ("engine.training.train", "train a GANSynth model"),
    "eval": ("engine.training.evaluate", "evaluate a model against real notes"),
    "play": ("engine.commands.play", "run the instrument headless (audio + MIDI)"),
    "devices": ("engine.commands.devices", "list audio outputs and MIDI inputs"),
    "backends": ("engine.commands.backends", "show or re-measure the engine --backend auto picks on this CPU"),
    "render": ("engine.commands.render", "render a MIDI file with morphing instruments"),
    "export-sfz": ("engine.commands.export_sfz", "export an instrument as an SFZ sampler patch"),
    "import-sound": ("engine.commands.import_sound", "make an instrument from recorded notes (a preset)"),
}


def _usage() -> str:
    lines = ["usage: gansynth [COMMAND] [ARGS...]", "", "commands:"]
    lines += [f"  {name:<15} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "With no command, opens the instrument window. `gansynth COMMAND -h` for details."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if not argv or argv[0].startswith("-"):
        argv = ["gui"] + argv
    name = argv[0]
    if name not in COMMANDS:
        print(f"gansynth: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"gansynth {name}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
