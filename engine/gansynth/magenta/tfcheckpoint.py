"""Pure-Python reader for TensorFlow V2 checkpoints ("tensor bundles"); no TensorFlow needed.

A checkpoint with prefix P is `P.index` (an SSTable mapping variable names to
BundleEntryProto records) plus data shards `P.data-00000-of-0000N` holding the
raw little-endian tensor bytes. A `checkpoint` text file in the directory names
the latest prefix.

    reader = CheckpointReader("stage_00012/model.ckpt-11000000")
    reader.variables()            # {name: TensorInfo(dtype, shape, ...)}
    kernel = reader.read("Generator/.../conv0/conv2d/kernel")   # np.ndarray

Every malformed input (truncated files, bad magic, bad checksums, offsets out of
range, a missing shard) raises `CheckpointError` naming the file and the fault.
All lengths are checked against the file size before anything is read or
allocated, so corrupt input cannot hang the reader or exhaust memory.
"""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.gansynth.magenta.crc import crc32c, unmask_crc

FOOTER_SIZE = 48  # two block handles zero-padded to 40 bytes + 8-byte magic
TABLE_MAGIC = 0xDB4775248B80FB57
BLOCK_TRAILER_SIZE = 5  # 1-byte compression type + 4-byte masked CRC32C
_MAX_SNAPPY_RATIO = 64  # snappy cannot expand more than ~32x; anything claiming more is corrupt

# TF DataType enum -> numpy dtype (little-endian). bfloat16 is widened to float32 on read.
_DTYPES: dict[int, tuple[str, np.dtype]] = {
    1: ("float32", np.dtype("<f4")),
    2: ("float64", np.dtype("<f8")),
    3: ("int32", np.dtype("<i4")),
    4: ("uint8", np.dtype("u1")),
    5: ("int16", np.dtype("<i2")),
    6: ("int8", np.dtype("i1")),
    7: ("string", np.dtype(object)),
    9: ("int64", np.dtype("<i8")),
    10: ("bool", np.dtype("?")),
    14: ("bfloat16", np.dtype("<u2")),
    17: ("uint16", np.dtype("<u2")),
    19: ("float16", np.dtype("<f2")),
    22: ("uint32", np.dtype("<u4")),
    23: ("uint64", np.dtype("<u8")),
}


class CheckpointError(Exception):
    """A checkpoint file is missing, truncated, corrupt or uses an unsupported feature."""


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: `dtype` is TF's name ("float32", "int64", ...)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int  # masked, as stored

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


# ----------------------------------------------------------------------------- wire formats

def _varint(buf: bytes, pos: int, what: str, limit: int | None = None, max_bytes: int = 10) -> tuple[int, int]:
    """Decode a base-128 varint at buf[pos:limit]; returns (value, new pos)."""
    limit = len(buf) if limit is None else limit
    result = shift = 0
    for i in range(max_bytes):
        if pos >= limit:
            raise ValueError(f"truncated varint in {what}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
    raise ValueError(f"varint too long in {what}")


def _proto_fields(buf: bytes, what: str) -> dict[int, list]:
    """Minimal protobuf decoder: field number -> list of ints (varint/fixed) or bytes."""
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos, what)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise ValueError(f"field number 0 in {what}")
        if wire == 0:
            value, pos = _varint(buf, pos, what)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise ValueError(f"truncated fixed64 in {what}")
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos, what)
            if pos + n > len(buf):
                raise ValueError(f"length-delimited field runs past the end of {what}")
            value, pos = bytes(buf[pos:pos + n]), pos + n
        elif wire == 5:
            if pos + 4 > len(buf):
                raise ValueError(f"truncated fixed32 in {what}")
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire} in {what}")
        fields.setdefault(field, []).append(value)
    return fields


def _last_int(fields: dict, number: int, what: str, default: int = 0) -> int:
    values = fields.get(number)
    if not values:
        return default
    if not isinstance(values[-1], int):
        raise ValueError(f"field {number} of {what} has the wrong wire type")
    return values[-1]


def _decode_handle(buf: bytes, pos: int, what: str) -> tuple[tuple[int, int], int]:
    offset, pos = _varint(buf, pos, what)
    size, pos = _varint(buf, pos, what)
    return (offset, size), pos


def _decode_shape(buf: bytes) -> tuple[int, ...]:
    fields = _proto_fields(buf, "TensorShapeProto")
    if _last_int(fields, 3, "TensorShapeProto"):
        raise ValueError("tensor of unknown rank")
    dims = []
    for dim in fields.get(2, []):
        if not isinstance(dim, bytes):
            raise ValueError("malformed dimension in TensorShapeProto")
        size = _last_int(_proto_fields(dim, "TensorShapeProto.Dim"), 1, "TensorShapeProto.Dim")
        if size >= 1 << 63:
            size -= 1 << 64  # int64 two's complement: -1 means unknown
        if size < 0:
            raise ValueError(f"negative dimension {size}")
        dims.append(size)
    return tuple(dims)


def _block_entries(block: bytes, what: str):
    """Yield (key, value) pairs of one SSTable block (prefix-compressed keys)."""
    if len(block) < 4:
        raise ValueError(f"{what} is shorter than its restart count")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 * (num_restarts + 1)
    if end < 0:
        raise ValueError(f"{what} claims {num_restarts} restart points, more than fit")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos, what, end, 5)
        non_shared, pos = _varint(block, pos, what, end, 5)
        value_len, pos = _varint(block, pos, what, end, 5)
        if shared > len(key) or pos + non_shared + value_len > end:
            raise ValueError(f"entry runs past the end of {what}")
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        yield key, block[pos:pos + value_len]
        pos += value_len


# ----------------------------------------------------------------------------- reader

def _snappy_decompress(data: bytes, what: str) -> bytes:
    try:
        import cramjam
    except ImportError:
        raise CheckpointError(f"{what} is snappy-compressed and the 'cramjam' package is not "
                              "installed (pip install cramjam)") from None
    try:
        claimed = cramjam.snappy.decompress_raw_len(data)
        if claimed > _MAX_SNAPPY_RATIO * len(data) + 1024:
            raise CheckpointError(f"{what}: snappy block claims an impossible size {claimed}")
        return bytes(cramjam.snappy.decompress_raw(data))
    except cramjam.DecompressionError as e:
        raise CheckpointError(f"{what}: corrupt snappy block ({e})") from None


def resolve_prefix(path) -> Path:
    """Accept a prefix, a `.index` file, a data shard, or a directory with a `checkpoint` file."""
    path = Path(os.path.expanduser(str(path)))
    if path.is_dir():
        return latest_checkpoint(path)
    name = path.name
    if name.endswith(".index"):
        return path.with_name(name[: -len(".index")])
    match = re.match(r"(.*)\.data-\d{5}-of-\d{5}$", name)
    if match:
        return path.with_name(match.group(1))
    return path


def latest_checkpoint(directory) -> Path:
    """The prefix named by `directory/checkpoint`, else the highest-numbered `*.index` there."""
    directory = Path(directory)
    state = directory / "checkpoint"
    if state.is_file():
        try:
            text = state.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{state}: unreadable ({e})") from None
        match = re.search(r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"', text, re.M)
        if match:
            name = match.group(1).encode().decode("unicode_escape")
            prefix = Path(name) if os.path.isabs(name) else directory / name
            # Checkpoints copied from another machine hold absolute paths: fall back to the basename.
            if not prefix.with_name(prefix.name + ".index").is_file():
                prefix = directory / Path(name).name
            return prefix
    indexes = sorted(directory.glob("*.index"), key=lambda p: _step_of(p.name[:-6]))
    if not indexes:
        raise CheckpointError(f"{directory}: no checkpoint here (no 'checkpoint' file and no *.index)")
    return indexes[-1].with_name(indexes[-1].name[:-6])


def _step_of(prefix_name: str) -> tuple[int, str]:
    match = re.search(r"-(\d+)$", prefix_name)
    return (int(match.group(1)) if match else -1, prefix_name)


class CheckpointReader:
    """Lists and reads the tensors of one V2 checkpoint.

    `verify` checks the CRC32C of every block and of each tensor read.
    """

    def __init__(self, path, verify: bool = True):
        self.prefix = resolve_prefix(path)
        self.index_path = self.prefix.with_name(self.prefix.name + ".index")
        self.verify = verify
        self.num_shards = 1
        self._entries: dict[str, TensorInfo] = {}
        self._load_index()

    # ---- index
    def _load_index(self) -> None:
        path = self.index_path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no such checkpoint index file") from None
        except OSError as e:
            raise CheckpointError(f"{path}: unreadable ({e})") from None
        try:
            self._parse_table(data)
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from None

    def _parse_table(self, data: bytes) -> None:
        if len(data) < FOOTER_SIZE:
            raise ValueError(f"truncated: {len(data)} bytes, shorter than the 48-byte SSTable footer")
        footer = data[-FOOTER_SIZE:]
        lo, hi = struct.unpack_from("<II", footer, 40)
        if (hi << 32) | lo != TABLE_MAGIC:
            raise ValueError("bad magic number: not a TensorFlow V2 checkpoint index (or truncated)")
        _, pos = _decode_handle(footer, 0, "footer")  # metaindex: unused by tensor bundles
        index_handle, _ = _decode_handle(footer, pos, "footer")
        table_end = len(data) - FOOTER_SIZE
        index_block = self._read_block(data, index_handle, table_end, "index block")
        seen_header = False
        prev_key = None
        for _, handle_bytes in _block_entries(index_block, "index block"):
            handle, _ = _decode_handle(handle_bytes, 0, "index block entry")
            block = self._read_block(data, handle, table_end, f"data block at offset {handle[0]}")
            for key, value in _block_entries(block, f"data block at offset {handle[0]}"):
                if prev_key is not None and key <= prev_key:
                    raise ValueError(f"keys out of order at {key!r}")
                prev_key = key
                if key == b"":
                    self._parse_header(value)
                    seen_header = True
                else:
                    self._add_entry(key, value)
        if not seen_header:
            raise ValueError("no bundle header entry (empty key)")
        for info in self._entries.values():
            if info.shard >= self.num_shards:
                raise ValueError(f"tensor {info.name} lives in shard {info.shard}, "
                                 f"but the header declares {self.num_shards} shard(s)")

    def _read_block(self, data: bytes, handle: tuple[int, int], table_end: int, what: str) -> bytes:
        offset, size = handle
        if offset + size + BLOCK_TRAILER_SIZE > table_end:
            raise ValueError(f"{what} (offset {offset}, size {size}) lies outside the file")
        contents = data[offset:offset + size]
        kind = data[offset + size]
        if self.verify:
            stored = struct.unpack_from("<I", data, offset + size + 1)[0]
            actual = crc32c(data[offset:offset + size + 1])
            if unmask_crc(stored) != actual:
                raise ValueError(f"checksum mismatch in {what} (file corrupt)")
        if kind == 0:
            return contents
        if kind == 1:
            return _snappy_decompress(contents, f"{self.index_path}: {what}")
        raise ValueError(f"{what} uses unknown compression type {kind}")

    def _parse_header(self, value: bytes) -> None:
        fields = _proto_fields(value, "BundleHeaderProto")
        self.num_shards = _last_int(fields, 1, "BundleHeaderProto")
        if not 1 <= self.num_shards <= 100000:
            raise ValueError(f"implausible number of shards {self.num_shards}")
        if _last_int(fields, 2, "BundleHeaderProto") != 0:
            raise ValueError("big-endian checkpoints are not supported")

    def _add_entry(self, key: bytes, value: bytes) -> None:
        try:
            name = key.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"variable name {key!r} is not UTF-8") from None
        fields = _proto_fields(value, f"entry {name!r}")
        if fields.get(7):
            raise ValueError(f"tensor {name} is a partitioned variable (slices), not supported")
        dtype_enum = _last_int(fields, 1, f"entry {name!r}")
        if dtype_enum not in _DTYPES:
            raise ValueError(f"tensor {name} has unsupported dtype enum {dtype_enum}")
        shape_bytes = fields.get(2, [b""])[-1]
        if not isinstance(shape_bytes, bytes):
            raise ValueError(f"tensor {name}: malformed shape")
        try:
            shape = _decode_shape(shape_bytes)
        except ValueError as e:
            raise ValueError(f"tensor {name}: {e}") from None
        info = TensorInfo(
            name=name, dtype=_DTYPES[dtype_enum][0], shape=shape,
            shard=_last_int(fields, 3, name), offset=_last_int(fields, 4, name),
            size=_last_int(fields, 5, name), crc32c=_last_int(fields, 6, name) & 0xFFFFFFFF)
        if info.dtype != "string" and info.size != info.numel * _DTYPES[dtype_enum][1].itemsize:
            raise ValueError(f"tensor {name}: {info.size} bytes stored for shape {shape} "
                             f"of {info.dtype}")
        self._entries[name] = info

    # ---- public
    def variables(self) -> dict[str, TensorInfo]:
        """name -> TensorInfo, sorted by name (the header entry is not included)."""
        return dict(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def shard_path(self, shard: int) -> Path:
        return self.prefix.with_name(f"{self.prefix.name}.data-{shard:05d}-of-{self.num_shards:05d}")

    def read(self, name: str) -> np.ndarray:
        """The tensor `name` as a writable numpy array (bfloat16 widened to float32)."""
        if name not in self._entries:
            raise KeyError(f"{self.index_path}: no tensor named {name!r}")
        info = self._entries[name]
        raw = self._read_bytes(info)
        if info.dtype == "string":
            return self._decode_strings(info, raw)
        if self.verify and unmask_crc(info.crc32c) != crc32c(raw):
            raise CheckpointError(f"{self.shard_path(info.shard)}: checksum mismatch in tensor {name} "
                                  "(file corrupt)")
        array = np.frombuffer(raw, dtype=_DTYPES_BY_NAME[info.dtype]).reshape(info.shape)
        if info.dtype == "bfloat16":
            return (array.astype(np.uint32) << np.uint32(16)).view(np.float32)
        return array.copy()

    def _read_bytes(self, info: TensorInfo) -> bytes:
        path = self.shard_path(info.shard)
        try:
            with open(path, "rb") as f:
                file_size = os.fstat(f.fileno()).st_size
                if info.offset + info.size > file_size:
                    raise CheckpointError(
                        f"{path}: tensor {info.name} at bytes {info.offset}..{info.offset + info.size} "
                        f"lies beyond the end of the file ({file_size} bytes; truncated?)")
                f.seek(info.offset)
                return f.read(info.size)
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing data shard {info.shard + 1} of {self.num_shards} "
                                  f"(needed for tensor {info.name})") from None
        except OSError as e:
            raise CheckpointError(f"{path}: unreadable ({e})") from None

    def _decode_strings(self, info: TensorInfo, raw: bytes) -> np.ndarray:
        """String tensors: varint64 lengths, a masked CRC32C of the lengths, then the bytes.

        TF's checksum covers each length as 4 LE bytes (8 if it exceeds 2**32 - 1), then the
        4 checksum bytes, then the string bytes.
        """
        where = f"{self.shard_path(info.shard)}: string tensor {info.name}"
        try:
            pos, lengths = 0, []
            for _ in range(info.numel):
                n, pos = _varint(raw, pos, where)
                lengths.append(n)
            if pos + 4 + sum(lengths) != len(raw):
                raise ValueError(f"element lengths do not add up to the {len(raw)} stored bytes")
        except ValueError as e:
            raise CheckpointError(f"{where}: {e}") from None
        if self.verify:
            crc = 0
            for n in lengths:
                crc = crc32c(struct.pack("<I" if n <= 0xFFFFFFFF else "<Q", n), crc)
            stored = struct.unpack_from("<I", raw, pos)[0]
            lengths_ok = unmask_crc(stored) == crc
            crc = crc32c(raw[pos:], crc)
            if not lengths_ok or unmask_crc(info.crc32c) != crc:
                raise CheckpointError(f"{where}: checksum mismatch (file corrupt)")
        pos += 4
        out = np.empty(info.numel, dtype=object)
        for i, n in enumerate(lengths):
            out[i] = raw[pos:pos + n]
            pos += n
        return out.reshape(info.shape)


_DTYPES_BY_NAME = {name: dtype for name, dtype in _DTYPES.values()}


def list_variables(path) -> list[tuple[str, str, tuple[int, ...]]]:
    """[(name, dtype, shape)] like tf.train.list_variables."""
    return [(i.name, i.dtype, i.shape) for i in CheckpointReader(path).variables().values()]
