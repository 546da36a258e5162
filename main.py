"""Open the GANSynth instrument window (same as `gansynth` with no command)."""
import sys

from engine.commands.cli import main

if __name__ == "__main__":
    sys.exit(main(["gui", *sys.argv[1:]]))
