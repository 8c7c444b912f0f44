from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from conftest import SHARED, write_jsonl

from reflexopt.data import is_categorical, load_dataset, split
from reflexopt.errors import DataError


def test_loads_plain_rows_and_ids(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "d.jsonl", [{"input": "a", "ideal": "x", "id": "r1"}, {"input": "b"}])
    cases = load_dataset(p)
    assert [c.id for c in cases] == ["r1", "1"]
    assert cases[0].ideal == "x" and cases[1].ideal is None
    assert cases[1].line == 2


def test_object_input_fills_fields(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "d.jsonl", [{"input": {"q": "why", "ctx": "c"}, "ideal": "y"}])
    (case,) = load_dataset(p)
    assert case.fields()["q"] == "why" and "q: why" in case.input_text


def test_other_columns_become_fields(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "d.jsonl", [{"question": "q1", "answer": "a1"}])
    (case,) = load_dataset(p, ideal_field="answer")
    assert case.input == {"question": "q1"} and case.ideal == "a1"


def test_input_and_ideal_field_mapping(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "d.jsonl", [{"text": "hello", "label": "greet"}])
    (case,) = load_dataset(p, input_field="text", ideal_field="label")
    assert case.input == "hello" and case.ideal == "greet"


def test_a_json_array_of_rows_loads_like_jsonl(tmp_path: Path) -> None:
    import json

    rows = [{"input": "a", "ideal": "x", "id": "r1"}, {"input": {"q": "b"}, "ideal": "y"}]
    p = tmp_path / "d.json"
    p.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    cases = load_dataset(p)
    flat = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    assert [(c.id, c.input, c.ideal) for c in cases] == [(c.id, c.input, c.ideal) for c in flat]
    assert [c.line for c in cases] == [2, 7]  # the line each element starts on, for later errors


def test_csv(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text('input,ideal\n"hello, world",greet\nbye,leave\n', encoding="utf-8")
    cases = load_dataset(p)
    assert [(c.input, c.ideal, c.line) for c in cases] == [("hello, world", "greet", 2), ("bye", "leave", 3)]


def test_security_incidents_chat_format_loads_unchanged() -> None:
    cases = load_dataset(SHARED / "security_incidents.jsonl")
    assert len(cases) == 100
    assert all(c.messages and c.ideal for c in cases)
    assert cases[0].input_text.startswith("SECURITY INCIDENT REPORT")


@pytest.mark.parametrize(
    "content, line, needle",
    [
        (b'{"input": "a"}\n{"input": \n', 2, "invalid JSON"),
        (b'{"input": "a"}\n{"ideal": "x"}\n', 2, "no input"),
        (b"", None, "empty"),
        (b"  \n\n", None, "empty"),
        (b'{"input": "caf\xe9"}\n', 1, "not UTF-8"),
        (b'["a"]\n', 1, "JSON object"),
        (b'{"input": ""}\n', 1, "empty"),
        (b'{"input": "a", "id": 1}\n{"input": "b", "id": 1}\n', 2, "duplicate id"),
        (b'[\n {"input": "a"},\n {"input": "b" "ideal": "x"}\n]\n', 3, "invalid JSON"),
        (b'[\n {"input": "a"},\n 5\n]\n', 3, "JSON object"),
        (b'[\n {"input": "a"}\n', 3, "expected `,` or `]`"),
        (b'[{"input": "a"}]\n[{"input": "b"}]\n', 2, "after the JSON array"),
        (b'[\n {"input": "a"},\n {"ideal": "x"}\n]', 3, "no input"),
    ],
)
def test_bad_files_name_file_line_and_fix(tmp_path: Path, content: bytes, line: int | None, needle: str) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_bytes(content)
    with pytest.raises(DataError) as ei:
        load_dataset(p)
    msg = str(ei.value)
    assert needle in msg and str(p) in msg and "fix:" in msg
    assert ei.value.line == line
    assert "\n" not in msg


def test_missing_file_and_missing_mapped_field(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "nope.jsonl")
    p = write_jsonl(tmp_path / "d.jsonl", [{"input": "a", "ideal": "x"}, {"input": "b"}])
    with pytest.raises(DataError, match=r"d.jsonl:1: row has no field `label`"):
        load_dataset(p, ideal_field="label")


def test_split_is_seeded_stratified_and_disjoint() -> None:
    cases = load_dataset(SHARED / "trec_questions.jsonl")
    assert is_categorical(cases)
    s1, s2 = split(cases, seed=3), split(cases, seed=3)
    assert s1 == s2
    ids = [c.id for part in (s1.train, s1.val, s1.test) for c in part]
    assert len(ids) == len(set(ids)) == 200
    full = Counter(c.ideal for c in cases)
    for part in (s1.train, s1.val, s1.test):
        got = Counter(c.ideal for c in part)
        for label, n in full.items():
            assert abs(got[label] / len(part) - n / 200) < 0.06
    assert split(cases, seed=4) != s1


def test_a_balanced_split_gives_val_and_test_as_many_cases_of_each_label(tmp_path: Path) -> None:
    """--balanced: on a set three in four of one label, val and test hold each label equally (the rest in train),
    nothing is lost or shared, the seed decides it, and the default split is the one it was."""
    rows = [{"input": f"text {i}", "ideal": "minor" if i % 4 == 0 else "major"} for i in range(200)]
    cases = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    plain, even = split(cases, seed=5), split(cases, seed=5, balanced=True)
    assert split(cases, seed=5, balanced=False) == plain and split(cases, seed=5, balanced=True) == even
    for part in (even.val, even.test):
        assert Counter(c.ideal for c in part) == {"minor": len(part) // 2, "major": len(part) // 2}
    # val and test keep every minor case the default split gave them; the major cases past that go to train
    assert Counter(c.ideal for c in even.val)["minor"] == Counter(c.ideal for c in plain.val)["minor"]
    assert {c.id for c in even.val} <= {c.id for c in plain.val}
    ids = [c.id for part in (even.train, even.val, even.test) for c in part]
    assert len(ids) == len(set(ids)) == 200
    assert split(cases, seed=6, balanced=True) != even

    free = load_dataset(SHARED / "security_incidents.jsonl")
    with pytest.raises(DataError, match="--balanced needs label references") as e:
        split(free, seed=0, balanced=True)
    assert "security_incidents.jsonl" in str(e.value) and "drop --balanced" in str(e.value)
    rare = load_dataset(write_jsonl(tmp_path / "r.jsonl", [*rows[:60], {"input": "odd one", "ideal": "rare"}]))
    with pytest.raises(DataError, match="label 'rare' has 1 row") as e:
        split(rare, seed=0, balanced=True)
    assert "r.jsonl" in str(e.value) and "add rows labelled 'rare'" in str(e.value)


def test_free_text_is_not_categorical() -> None:
    cases = load_dataset(SHARED / "security_incidents.jsonl")
    assert not is_categorical(cases)
    s = split(cases, seed=0)
    assert len(s.train) + len(s.val) + len(s.test) == 100 and min(len(s.train), len(s.val), len(s.test)) > 0


def test_a_jsonl_file_with_cr_only_line_ends_is_read(tmp_path: Path) -> None:
    """Such a file used to be read, then was rejected (one line of invalid JSON)."""
    from reflexopt.data import load_dataset

    p = tmp_path / "mac.jsonl"
    p.write_bytes(b'{"input": "a", "ideal": "x"}\r{"input": "b", "ideal": "y"}\r')
    cases = load_dataset(p)
    assert [c.input_text for c in cases] == ["a", "b"] and [c.line for c in cases] == [1, 2]
