"""engine.util.fileio: the one guarded reader for JSON files users hand us."""
import pytest

from engine.instrument.presets import PresetError, load_preset
from engine.util.fileio import JsonFileError, parse_json, read_json


def test_read_json_reads_a_plain_file(tmp_path):
    (tmp_path / "a.json").write_text('{"x": [1, 2, {"y": null}]}')
    assert read_json(tmp_path / "a.json") == {"x": [1, 2, {"y": None}]}


@pytest.mark.parametrize("case,content,message", [
    ("missing", None, r"missing\.json: no such file"),
    ("dir", None, r"dir\.json: is a directory"),
    ("binary", b"\xff\xfe\x00{", r"binary\.json: not UTF-8 text"),
    ("broken", b'{"a": ', r"broken\.json: not valid JSON"),
    ("deep", b"[" * 100000 + b"]" * 100000, r"deep\.json: JSON nested too deeply"),
    ("deepish", b"[" * 65 + b"]" * 65, r"deepish\.json: JSON nested 65 levels deep \(at most 64\)"),
    ("big", b" " * 2048 + b"{}", r"big\.json: 2,050 bytes, larger than the 1,024"),
])
def test_bad_json_files_name_the_file_and_the_problem(tmp_path, case, content, message):
    path = tmp_path / f"{case}.json"
    if case == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(JsonFileError, match=message):
        read_json(path, max_bytes=1024 if case == "big" else 2 ** 24)


def test_parse_json_names_its_source():
    with pytest.raises(JsonFileError, match=r"^header: not valid JSON"):
        parse_json("{", "header")
    assert parse_json("[[1]]", "x", max_depth=2) == [[1]]
    with pytest.raises(JsonFileError, match="nested 3 levels"):
        parse_json("[[[1]]]", "x", max_depth=2)


def test_presets_go_through_the_guarded_reader(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("{" * 0 + "[" * 3000 + "]" * 3000)
    with pytest.raises(PresetError, match=r"deep\.json: JSON nested too deeply .*\(a preset\)"):
        load_preset(path)
