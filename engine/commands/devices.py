"""`gansynth devices`: audio outputs and MIDI inputs this machine offers."""
from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("--midi-api", default=None,
                   help="rtmidi API to use (LINUX_ALSA, UNIX_JACK, ...; default: the first that works)")


def run(args) -> int:
    from engine.devices.listing import AudioDeviceError, list_output_devices
    from engine.devices.midi_input import list_input_ports

    print("Audio outputs:")
    try:
        devices = list_output_devices()
    except AudioDeviceError as e:
        devices = []
        print(f"  none: {e}")
    else:
        if not devices:
            print("  none found (no sound card, and no JACK server running); `gansynth play` and the "
                  "window still run on the offline clock, and recording works")
    for d in devices:
        print(f"  {d}")

    print("MIDI inputs:")
    names, api, error = list_input_ports(args.midi_api)
    if error:
        print(f"  none: {error}; the on-screen keyboard still plays")
    else:
        if not names:
            print(f"  none found ({api}); other programs can connect to the instrument's virtual "
                  f"port once it runs")
        for name in names:
            print(f"  {name} [{api}]")
    return 0
