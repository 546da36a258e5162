"""CRC32C (Castagnoli) as TensorFlow's checkpoints store it: plain and masked.

    crc32c(data, value=0)      # like zlib.crc32; the PyPI "crc32c" package when installed
    crc32c_numpy(data)         # pure numpy: bytewise below 32 KiB, 2**k parallel lanes above
    mask_crc(crc), unmask_crc(masked)   # TF's rotate-and-add masking
"""
from __future__ import annotations

import functools

import numpy as np

_MASK_DELTA = 0xA282EAD8
_POLY = 0x82F63B78  # Castagnoli, reflected


def _byte_table() -> np.ndarray:
    table = np.zeros(256, np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (_POLY if c & 1 else 0)
        table[i] = c
    return table


_T0 = _byte_table()
_SLICE = [_T0]
for _k in range(1, 4):  # slicing-by-4 tables: T_k[b] = CRC of byte b followed by k zero bytes
    _prev = _SLICE[-1]
    _SLICE.append((_prev >> np.uint32(8)) ^ _T0[_prev & np.uint32(0xFF)])
_T0_LIST = [int(v) for v in _T0]


def _crc_bytes(reg: int, data) -> int:
    """Raw register update (no init / final xor), one byte at a time: for short inputs."""
    table = _T0_LIST
    for b in bytes(data):
        reg = (reg >> 8) ^ table[(reg ^ b) & 0xFF]
    return reg


@functools.lru_cache(maxsize=64)
def _zeros_operator(nbytes: int) -> tuple[int, ...]:
    """GF(2) matrix (32 column images) advancing a raw register over `nbytes` zero bytes."""
    one = [(1 << j) >> 8 ^ _T0_LIST[(1 << j) & 0xFF] for j in range(32)]
    result = [1 << j for j in range(32)]  # identity
    square = one
    while nbytes:
        if nbytes & 1:
            result = _compose(square, result)
        square = _compose(square, square)
        nbytes >>= 1
    return tuple(result)


def _apply(op: list[int], reg: int) -> int:
    out = 0
    j = 0
    while reg:
        if reg & 1:
            out ^= op[j]
        reg >>= 1
        j += 1
    return out


def _compose(a: list[int], b: list[int]) -> list[int]:
    """a after b."""
    return [_apply(a, col) for col in b]


def _operator_tables(op: list[int]) -> list[np.ndarray]:
    """Four 256-entry tables applying `op` to a register byte by byte (vectorised apply)."""
    tables = []
    for byte in range(4):
        t = np.zeros(256, np.uint32)
        for bit in range(8):
            mask = ((np.arange(256) >> bit) & 1).astype(bool)
            t[mask] ^= np.uint32(op[8 * byte + bit])
        tables.append(t)
    return tables


def _apply_tables(tables: list[np.ndarray], reg: np.ndarray) -> np.ndarray:
    m = np.uint32(0xFF)
    return (tables[0][reg & m] ^ tables[1][(reg >> np.uint32(8)) & m]
            ^ tables[2][(reg >> np.uint32(16)) & m] ^ tables[3][reg >> np.uint32(24)])


def _crc_lanes(data: memoryview, lanes: int) -> tuple[int, int]:
    """Raw CRC (register starting at 0) of the first lanes*4*m bytes, computed in `lanes`
    parallel chunks with slicing-by-4 and merged pairwise; returns (raw crc, bytes used)."""
    words_per_lane = len(data) // (4 * lanes)
    used = words_per_lane * 4 * lanes
    words = np.frombuffer(data[:used], dtype="<u4").reshape(lanes, words_per_lane)
    words = np.ascontiguousarray(words.T)  # [step, lane]
    t0, t1, t2, t3 = _SLICE
    m = np.uint32(0xFF)
    reg = np.zeros(lanes, np.uint32)
    for step in range(words_per_lane):
        x = reg ^ words[step]
        reg = t3[x & m] ^ t2[(x >> np.uint32(8)) & m] ^ t1[(x >> np.uint32(16)) & m] ^ t0[x >> np.uint32(24)]
    op = _zeros_operator(4 * words_per_lane)
    while len(reg) > 1:  # crc(A || B) = shift(crc(A), len B) ^ crc(B), every pair at once
        reg = _apply_tables(_operator_tables(op), reg[0::2]) ^ reg[1::2]
        op = _compose(op, op)
    return int(reg[0]), used


try:  # optional hardware-accelerated package (PyPI "crc32c"); the numpy path needs nothing
    from crc32c import crc32c as _crc32c_native
except ImportError:
    _crc32c_native = None


def crc32c(data, value: int = 0) -> int:
    """CRC32C (Castagnoli) of `data`, continuing from a previous `value` like zlib.crc32."""
    if _crc32c_native is not None:
        return _crc32c_native(memoryview(data).cast("B"), value)
    return crc32c_numpy(data, value)


def crc32c_numpy(data, value: int = 0) -> int:
    """Table-driven CRC32C: bytewise for short inputs, 2**k parallel lanes merged in GF(2) above."""
    view = memoryview(data).cast("B")
    reg = value ^ 0xFFFFFFFF
    if len(view) >= 32768:  # below this the per-byte loop is faster than numpy's call overhead
        lanes = 1 << min(14, (len(view) // 256).bit_length() - 1)
        raw, used = _crc_lanes(view, lanes)
        reg = _apply(_zeros_operator(used), reg) ^ raw
        view = view[used:]
    return _crc_bytes(reg, view) ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF
