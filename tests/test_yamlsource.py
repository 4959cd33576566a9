"""The YAML layer: positions, YAML 1.2 scalars, and hostile documents stopped early."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowengine.agentfile.diagnostics import Position
from flowengine.agentfile.yamlsource import MAX_FILE_BYTES, YamlLoadError, load, read_text


def test_positions_of_keys_and_values_are_one_based() -> None:
    doc = load("name: A\nsteps:\n  first:\n    type: process\n")
    assert doc.key_at(("name",)) == Position(1, 1)
    assert doc.value_at(("name",)) == Position(1, 7)
    assert doc.key_at(("steps", "first")) == Position(3, 3)
    assert doc.value_at(("steps", "first", "type")) == Position(4, 11)


def test_missing_path_falls_back_to_the_nearest_parent() -> None:
    doc = load("steps:\n  first:\n    type: process\n")
    assert doc.key_at(("steps", "first", "next")) == Position(2, 3)


def test_scalars_follow_yaml_1_2_core_schema() -> None:
    doc = load(
        "a: yes\nb: no\nc: on\nd: true\ne: False\nf: 12\ng: 0x1f\nh: 1.5\ni: ~\nj: 2001-12-14\n"
        "k: .inf\nl: '12'\n"
    )
    assert doc.data == {
        "a": "yes",
        "b": "no",
        "c": "on",
        "d": True,
        "e": False,
        "f": 12,
        "g": 31,
        "h": 1.5,
        "i": None,
        "j": "2001-12-14",
        "k": float("inf"),
        "l": "12",
    }


def test_keys_are_always_text() -> None:
    assert load("1: a\ntrue: b\nyes: c\n~: d\n").data == {
        "1": "a",
        "true": "b",
        "yes": "c",
        "~": "d",
    }


def test_explicit_core_tags_are_honoured() -> None:
    assert load("a: !!str 12\nb: !!int '7'\nc: !!float 2\n").data == {"a": "12", "b": 7, "c": 2.0}


def test_anchors_aliases_and_merge_keys_work() -> None:
    doc = load("base: &b {type: process, next: x}\nstep:\n  <<: *b\n  next: y\n")
    assert doc.data["step"] == {"type": "process", "next": "y"}


def test_duplicate_keys_are_recorded_with_both_positions() -> None:
    doc = load("a: 1\nb: 2\na: 3\n")
    assert doc.data == {"a": 3, "b": 2}
    (dup,) = doc.duplicates
    assert (dup.key, dup.first, dup.again) == ("a", Position(1, 1), Position(3, 1))


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("[" * 100_000, "yaml-too-complex"),
        ("a:\n" + "".join(" " * (i + 1) + "a:\n" for i in range(500)), "yaml-too-complex"),
        ("- " * 5_000 + "x", "yaml-too-complex"),
        ("x: " + "9" * 5_000, "yaml-too-complex"),
        ("&a [*a]", "yaml-syntax"),
        ("a: *undefined", "yaml-syntax"),
        ("a: !!python/object:os.system ls", "yaml-unsupported-tag"),
        ("a: !!binary aGVsbG8=", "yaml-unsupported-tag"),
        ("a: !custom x", "yaml-unsupported-tag"),
        ("a: !!int abc", "yaml-syntax"),
        ("? [a]\n: b", "yaml-syntax"),
        ("a: 1\n---\nb: 2\n", "yaml-syntax"),
        ("a: 'x\x07y'", "yaml-syntax"),
        ("\t- a", "yaml-syntax"),
        ("", "empty-file"),
        ("# only a comment\n", "empty-file"),
    ],
)
def test_hostile_or_broken_documents_raise_a_located_error(text: str, code: str) -> None:
    with pytest.raises(YamlLoadError) as caught:
        load(text)
    assert caught.value.code == code
    assert caught.value.position.line >= 1 and caught.value.position.column >= 1


def test_alias_bomb_is_stopped_before_it_expands() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    with pytest.raises(YamlLoadError) as caught:
        load("\n".join(lines))
    assert caught.value.code == "yaml-too-complex"
    assert caught.value.position.line == 7  # where the expansion passes the limit


def test_binary_file_is_refused_at_the_nul_byte(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes(b"name: x\nste\x00ps: {}\n")
    with pytest.raises(YamlLoadError) as caught:
        read_text(str(path))
    assert caught.value.code == "binary-file"
    assert caught.value.position == Position(2, 4)


def test_invalid_utf8_names_the_byte_and_its_place(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes("name: café\n".encode() + b"steps: \xff\n")
    with pytest.raises(YamlLoadError) as caught:
        read_text(str(path))
    assert caught.value.code == "not-utf8"
    assert "0xff" in caught.value.message
    assert caught.value.position == Position(2, 8)


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes(b"\xef\xbb\xbfname: x\n")
    assert load(read_text(str(path))).data == {"name": "x"}


def test_oversized_file_is_refused_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(YamlLoadError) as caught:
        read_text(str(path))
    assert caught.value.code == "file-too-large"


def test_folder_and_missing_file_are_reported(tmp_path: Path) -> None:
    for path in (tmp_path, tmp_path / "missing.yaml"):
        with pytest.raises(YamlLoadError) as caught:
            read_text(str(path))
        assert caught.value.code == "file-unreadable"


def test_only_a_plain_merge_key_merges() -> None:
    assert load('a: {"<<": {b: 1}}').data == {"a": {"<<": {"b": 1}}}
    assert load("a: {<<: {b: 1}}").data == {"a": {"b": 1}}


def test_keys_after_a_merge_override_it_without_being_duplicates() -> None:
    doc = load("base: &b {type: process, next: x}\nstep:\n  <<: *b\n  next: y\n")
    assert doc.data["step"] == {"type": "process", "next": "y"}
    assert doc.duplicates == []


@pytest.mark.parametrize(
    ("text", "at", "quote"),
    [
        ('name: A\nsteps:\n  a:\n    instruction: "Say hello.\n    next: b\n', (4, 18), '"'),
        ("name: 'A\nsteps: {}\n", (1, 7), "'"),
        ("a:\n  - x\n  - 'open\n---\nb: 1\n", (3, 5), "'"),  # runs into a '---', not the end
    ],
)
def test_an_unclosed_quote_is_reported_where_it_opens(
    text: str, at: tuple[int, int], quote: str
) -> None:
    with pytest.raises(YamlLoadError) as caught:
        load(text)
    assert caught.value.code == "yaml-syntax"
    assert caught.value.position == Position(*at)
    assert f"starts here with {quote} is never closed" in caught.value.message
    assert f"add the closing {quote}" in caught.value.message


def test_other_errors_inside_a_quoted_string_keep_their_own_place() -> None:
    with pytest.raises(YamlLoadError) as caught:
        load('a: "x\\qy"\n')
    assert "escape" in caught.value.message
    assert caught.value.position == Position(1, 6)  # the bad escape, not the quote


def test_an_anchor_on_a_key_can_be_used_by_a_later_alias() -> None:
    doc = load("steps:\n  &first ask: {type: terminal}\nstart: *first\n")
    assert doc.data == {"steps": {"ask": {"type": "terminal"}}, "start": "ask"}
    assert doc.value_at(("start",)) == Position(3, 8)


def test_an_alias_of_text_can_be_a_key_and_of_a_mapping_cannot() -> None:
    assert load("&k a: 1\nb: {*k : 2}\n").data == {"a": 1, "b": {"a": 2}}
    assert load("x: &n 12\ny: {*n : z}\n").data == {"x": 12, "y": {"12": "z"}}
    with pytest.raises(YamlLoadError) as caught:
        load("a: &m {b: 1}\n*m : 2\n")
    assert caught.value.code == "yaml-syntax"
    assert caught.value.position == Position(2, 1)
    assert "cannot be a mapping key" in caught.value.message


@pytest.mark.parametrize(
    ("text", "code", "at"),
    [
        ("!!python/object:os.system a: 1\n", "yaml-unsupported-tag", (1, 1)),
        ("a:\n  !custom b: 1\n", "yaml-unsupported-tag", (2, 3)),
        ("? !!binary aGk=\n: x\n", "yaml-unsupported-tag", (1, 3)),
        ("!!int abc: x\n", "yaml-syntax", (1, 1)),
    ],
)
def test_a_tag_on_a_key_is_checked_like_a_tag_on_a_value(
    text: str, code: str, at: tuple[int, int]
) -> None:
    with pytest.raises(YamlLoadError) as caught:
        load(text)
    assert (caught.value.code, caught.value.position) == (code, Position(*at))


def test_core_tags_on_keys_are_accepted_and_keys_stay_text() -> None:
    assert load("!!str a: 1\n!!int 7: x\n!!bool true: y\n").data == {
        "a": 1,
        "7": "x",
        "true": "y",
    }
