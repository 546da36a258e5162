"""CRC32C and tensor-read throughput of engine.gansynth.magenta.crc and .tfcheckpoint (pure Python + numpy).

    python -m benchmarks.tfcheckpoint

Baseline measured in the same run: zlib.crc32 (C, a CRC of the same kind) on the same
buffer, so the ratio says how far the numpy CRC32C is from a compiled one. An official
GANSynth checkpoint's EMA generator is ~29 MB of float32; its CRC time is printed too.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from benchmarks.common import summary, time_ms
from engine.gansynth.magenta.crc import _crc32c_native, _crc_bytes, crc32c_numpy
from engine.gansynth.magenta.tfcheckpoint import CheckpointReader

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "magenta" / "hires_ema" / "stage_00012"


def main() -> None:
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, 29 * 1024 * 1024, dtype=np.uint8).tobytes()
    small = big[:64 * 1024]
    ms_numpy = time_ms(lambda: crc32c_numpy(big), repeat=5)
    ms_zlib = time_ms(lambda: zlib.crc32(big), repeat=5)
    ms_bytewise_64k = time_ms(lambda: _crc_bytes(0xFFFFFFFF, small), repeat=3)
    mb = len(big) / 2 ** 20
    reader = CheckpointReader(FIXTURE)
    names = list(reader)
    ms_read_all = time_ms(lambda: [reader.read(n) for n in names], repeat=5)
    print(f"crc32c numpy lanes : {mb / ms_numpy * 1e3:8.1f} MB/s  ({ms_numpy:.1f} ms for 29 MB, one EMA generator)")
    print(f"zlib.crc32 (C)     : {mb / ms_zlib * 1e3:8.1f} MB/s  (baseline)")
    print(f"crc32c bytewise    : {0.0625 / ms_bytewise_64k * 1e3:8.1f} MB/s  (pure Python, used below 32 KiB)")
    if _crc32c_native is not None:
        ms_native = time_ms(lambda: _crc32c_native(big), repeat=5)
        print(f"crc32c package     : {mb / ms_native * 1e3:8.1f} MB/s  (optional, used when installed)")
    print(f"read all {len(names)} fixture tensors (verified): {ms_read_all:.1f} ms")
    summary("tfcheckpoint", {
        "crc32c_numpy_mb_s": round(mb / ms_numpy * 1e3, 1),
        "zlib_crc32_mb_s": round(mb / ms_zlib * 1e3, 1),
        "ratio_vs_zlib": round(ms_numpy / ms_zlib, 1),
        "ms_crc_29mb": round(ms_numpy, 1),
        "ms_read_fixture": round(ms_read_all, 1),
    })


if __name__ == "__main__":
    main()
