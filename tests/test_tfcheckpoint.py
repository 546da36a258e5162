"""The pure-Python TF V2 checkpoint reader against checkpoints written by real TensorFlow.

Fixtures: tests/fixtures/magenta/ (made by tests/fixtures/make_magenta_fixtures.py with
tensorflow-cpu); each Magenta fixture has a manifest.json written by TF's own reader.
Malformed inputs are crafted by corrupting those files or by a tiny SSTable writer below.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.gansynth.magenta import tfcheckpoint as tfc
from engine.gansynth.magenta.crc import _crc_bytes, crc32c, crc32c_numpy, mask_crc, unmask_crc
from engine.gansynth.magenta.tfcheckpoint import CheckpointError, CheckpointReader

FIXTURES = Path(__file__).parent / "fixtures" / "magenta"
HIRES = FIXTURES / "hires_ema" / "stage_00012"
LORES = FIXTURES / "lores_raw_partial" / "stage_00005"
MISC = FIXTURES / "misc" / "ckpt"


# ----------------------------------------------------------------------------- against TF

@pytest.mark.parametrize("stage_dir", [HIRES, LORES], ids=["hires_3_shards", "lores_1_shard"])
def test_reader_matches_tensorflow_manifest(stage_dir):
    manifest = json.loads((stage_dir.parent / "manifest.json").read_text())
    reader = CheckpointReader(stage_dir)
    infos = reader.variables()
    assert set(infos) == set(manifest)
    for name, want in manifest.items():
        value = reader.read(name)
        assert infos[name].dtype == want["dtype"], name
        assert value.shape == tuple(want["shape"]), name
        assert hashlib.sha256(value.tobytes()).hexdigest()[:16] == want["sha256"], name


def test_hires_fixture_has_magenta_variables_and_shards():
    reader = CheckpointReader(HIRES)
    assert reader.num_shards == 3
    assert len(reader) == 312  # G raw + EMA + D + Adam slots + beta powers + global_step + Variable
    assert {reader.variables()[n].shard for n in reader} == {0, 1, 2}
    assert int(reader.read("global_step")) == 11_000_000
    assert reader.variables()["global_step"].dtype == "int64"
    assert reader.read("Variable").dtype == np.float32
    name = "Generator/progressive_gan_generator/progressive_gan_block_1/conv0/conv2d/kernel"
    assert reader.variables()[name].shape == (2, 16, 77, 8)
    assert name + "/ExponentialMovingAverage" in reader
    assert "progressive_gan_train_ops/" + name + "/Adam_1" in reader
    assert "progressive_gan_train_ops/generator_train/beta2_power" in reader


def test_every_dtype_and_strings():
    reader = CheckpointReader(MISC)
    expected = np.load(MISC.parent / "expected.npz")
    for key in expected.files:
        value = reader.read(f"{key}/.ATTRIBUTES/VARIABLE_VALUE")
        assert value.dtype == expected[key].dtype, key
        assert np.array_equal(value, expected[key]), key
    text = reader.read("text/.ATTRIBUTES/VARIABLE_VALUE")
    assert list(text) == [b"hello", b"", "gr\u00fc\u00dfe".encode(), b"x" * 300]
    assert reader.read("word/.ATTRIBUTES/VARIABLE_VALUE").item() == b"scalar string"
    assert reader.variables()["bf16/.ATTRIBUTES/VARIABLE_VALUE"].dtype == "bfloat16"
    assert b"VARIABLE_VALUE" in reader.read("_CHECKPOINTABLE_OBJECT_GRAPH").item()


def test_list_variables_and_prefix_forms():
    listing = tfc.list_variables(MISC)
    assert ("i32/.ATTRIBUTES/VARIABLE_VALUE", "int32", (2, 2)) in listing
    prefix = LORES / "model.ckpt-176"
    for form in (LORES, prefix, Path(str(prefix) + ".index"), Path(str(prefix) + ".data-00000-of-00001")):
        assert tfc.resolve_prefix(form) == prefix
    # The hires `checkpoint` file names an absolute path on another machine: fall back to its basename.
    assert tfc.latest_checkpoint(HIRES) == HIRES / "model.ckpt-11000000"


def test_latest_checkpoint_without_state_file(tmp_path):
    for step in (9, 10, 100):
        (tmp_path / f"model.ckpt-{step}.index").write_bytes(b"")
    assert tfc.latest_checkpoint(tmp_path) == tmp_path / "model.ckpt-100"
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        tfc.latest_checkpoint(tmp_path / "empty")


# ----------------------------------------------------------------------------- CRC32C

def test_crc32c_known_vectors():
    assert crc32c(b"123456789") == crc32c_numpy(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert unmask_crc(mask_crc(0x12345678)) == 0x12345678


@settings(max_examples=25, deadline=None, database=None)
@given(st.integers(0, 200_000), st.integers(0, 2 ** 32 - 1), st.integers(0, 10))
def test_crc32c_parallel_lanes_equal_bytewise(n, seed, split):
    data = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    want = _crc_bytes(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    assert crc32c_numpy(data) == want and crc32c(data) == want
    cut = n * split // 10
    assert crc32c_numpy(data[cut:], crc32c_numpy(data[:cut])) == want


# ----------------------------------------------------------------------------- a tiny SSTable writer

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value) -> bytes:
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    return _varint(number << 3) + _varint(value)


def _entry_proto(dtype=1, shape=(), shard=0, offset=0, size=0, crc=0) -> bytes:
    dims = b"".join(_field(2, _field(1, d)) for d in shape)
    out = _field(1, dtype) + _field(2, dims) + _field(3, shard) + _field(4, offset) + _field(5, size)
    return out + _varint(6 << 3 | 5) + struct.pack("<I", crc)


def _block(entries) -> bytes:
    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in entries)
    return body + struct.pack("<II", 0, 1)


def _with_trailer(contents: bytes, kind: int) -> bytes:
    return contents + bytes([kind]) + struct.pack("<I", mask_crc(crc32c(contents + bytes([kind]))))


def write_table(path: Path, entries, compress: bool = False) -> None:
    """An index file with one data block (optionally snappy) and an empty metaindex."""
    import cramjam

    data, kind = _block(entries), 0
    if compress:
        data, kind = bytes(cramjam.snappy.compress_raw(data)), 1
    meta = _block([])
    index = _block([(b"\xff", _varint(0) + _varint(len(data)))])
    out = _with_trailer(data, kind)
    meta_at = len(out)
    out += _with_trailer(meta, 0)
    index_at = len(out)
    out += _with_trailer(index, 0)
    handles = _varint(meta_at) + _varint(len(meta)) + _varint(index_at) + _varint(len(index))
    path.write_bytes(out + handles.ljust(40, b"\0") + struct.pack("<II", 0x8B80FB57, 0xDB477524))


def _header(num_shards=1) -> tuple[bytes, bytes]:
    return b"", _field(1, num_shards) + _field(2, 0) + _field(3, _field(1, 1))


def _crafted(tmp_path, values: np.ndarray, compress=False, **entry) -> Path:
    raw = values.astype("<f4").tobytes()
    prefix = tmp_path / "ck"
    (tmp_path / "ck.data-00000-of-00001").write_bytes(raw)
    fields = dict(dtype=1, shape=values.shape, offset=0, size=len(raw), crc=mask_crc(crc32c(raw)))
    fields.update(entry)
    write_table(tmp_path / "ck.index", [_header(), (b"w", _entry_proto(**fields))], compress)
    return prefix


@pytest.mark.parametrize("compress", [False, True], ids=["raw_block", "snappy_block"])
def test_crafted_table_reads(tmp_path, compress):
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    reader = CheckpointReader(_crafted(tmp_path, values, compress))
    assert np.array_equal(reader.read("w"), values)


def test_snappy_without_cramjam_is_a_clear_error(tmp_path, monkeypatch):
    prefix = _crafted(tmp_path, np.ones(3, np.float32), compress=True)
    monkeypatch.setitem(sys.modules, "cramjam", None)  # as if the package were not installed
    with pytest.raises(CheckpointError, match="cramjam"):
        CheckpointReader(prefix)


@pytest.mark.parametrize("entry, match", [
    (dict(offset=1000), "beyond the end"),
    (dict(offset=2 ** 62), "beyond the end"),
    (dict(size=10), "bytes stored for shape"),
    (dict(shard=3), "shard 3"),
    (dict(dtype=99), "unsupported dtype"),
    (dict(crc=1), "checksum mismatch"),
])
def test_bad_entries_are_clear_errors(tmp_path, entry, match):
    values = np.ones((2, 2), np.float32)
    with pytest.raises(CheckpointError, match=match):
        CheckpointReader(_crafted(tmp_path, values, **entry)).read("w")


# ----------------------------------------------------------------------------- corrupt real files

@pytest.fixture
def lores_copy(tmp_path):
    shutil.copytree(LORES, tmp_path / "stage")
    return tmp_path / "stage"


def test_missing_index(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint index"):
        CheckpointReader(tmp_path / "nothing")


@pytest.mark.parametrize("keep", [0, 10, 47, 48, 1000, -1])
def test_truncated_index(lores_copy, keep):
    index = lores_copy / "model.ckpt-176.index"
    data = index.read_bytes()
    index.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    with pytest.raises(CheckpointError, match="model.ckpt-176.index"):
        CheckpointReader(lores_copy)


def test_bad_magic(lores_copy):
    index = lores_copy / "model.ckpt-176.index"
    data = bytearray(index.read_bytes())
    data[-1] ^= 0xFF
    index.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="bad magic"):
        CheckpointReader(lores_copy)


def test_flipped_index_byte_fails_block_checksum(lores_copy):
    index = lores_copy / "model.ckpt-176.index"
    data = bytearray(index.read_bytes())
    data[100] ^= 0x01
    index.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        CheckpointReader(lores_copy)


def test_flipped_data_byte_fails_tensor_checksum(lores_copy):
    reader = CheckpointReader(lores_copy)
    info = max(reader.variables().values(), key=lambda i: i.size)
    shard = reader.shard_path(info.shard)
    data = bytearray(shard.read_bytes())
    data[info.offset + info.size // 2] ^= 0x40
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"checksum mismatch in tensor {info.name}"):
        reader.read(info.name)
    assert CheckpointReader(lores_copy, verify=False).read(info.name).shape == info.shape


def test_truncated_and_missing_shards(tmp_path):
    shutil.copytree(HIRES, tmp_path / "stage")
    reader = CheckpointReader(tmp_path / "stage")
    name = "Generator/progressive_gan_generator/progressive_gan_block_1/conv0/conv2d/kernel"
    shard = reader.shard_path(reader.variables()[name].shard)
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="beyond the end of the file"):
        reader.read(name)
    shard.unlink()
    with pytest.raises(CheckpointError, match=r"missing data shard \d of 3"):
        reader.read(name)
    with pytest.raises(KeyError, match="no tensor named"):
        reader.read("nope")


# ----------------------------------------------------------------------------- fuzzing

_INDEX = (LORES / "model.ckpt-176.index").read_bytes()
_MISC_INDEX = (MISC.parent / "ckpt.index").read_bytes()
_MISC_DATA = (MISC.parent / "ckpt.data-00000-of-00001").read_bytes()


def _mutate(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for kind, pos, value in edits:
        pos %= max(1, len(out))
        if kind == 0:
            out[pos] = value
        elif kind == 1:
            del out[pos:pos + value % 64 + 1]
        else:
            out[pos:pos] = bytes([value]) * (value % 8 + 1)
    return bytes(out)


_EDITS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=6)


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=_EDITS, which=st.sampled_from(["lores", "misc"]), verify=st.booleans())
def test_fuzzed_index_never_crashes(tmp_path, edits, which, verify):
    """Any corruption of an index gives CheckpointError (or a valid read), never another exception."""
    src = _INDEX if which == "lores" else _MISC_INDEX
    data_src = (LORES / "model.ckpt-176.data-00000-of-00001" if which == "lores"
                else MISC.parent / "ckpt.data-00000-of-00001")
    (tmp_path / "f.index").write_bytes(_mutate(src, edits))
    shutil.copyfile(data_src, tmp_path / "f.data-00000-of-00001")
    try:
        reader = CheckpointReader(tmp_path / "f", verify=verify)
        for name in list(reader)[:20]:
            reader.read(name)
    except CheckpointError:
        pass


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=_EDITS)
def test_fuzzed_data_shard_never_crashes(tmp_path, edits):
    (tmp_path / "f.index").write_bytes(_MISC_INDEX)
    (tmp_path / "f.data-00000-of-00001").write_bytes(_mutate(_MISC_DATA, edits))
    for verify in (True, False):
        reader = CheckpointReader(tmp_path / "f", verify=verify)
        for name in reader:
            try:
                reader.read(name)
            except CheckpointError:
                pass
