"""Datasets: read JSONL / CSV (plain rows or the chat `messages` + `ideal` format), validate, split."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DataError

RESERVED = ("id", "ideal", "messages")
REFERENCE_NAMES = ("label", "answer", "output", "expected", "target", "reference")


@dataclass(frozen=True)
class Case:
    """One dataset row, normalised."""

    id: str
    input: str | dict[str, Any]
    ideal: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    line: int = 0
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def input_text(self) -> str:
        """The input as one string (for judges, diagnosis and `{input}`)."""
        if isinstance(self.input, str):
            return self.input
        if len(self.input) == 1:
            return str(next(iter(self.input.values())))
        return "\n".join(f"{k}: {v}" for k, v in self.input.items())

    def fields(self) -> dict[str, Any]:
        """Values available to prompt placeholders."""
        out: dict[str, Any] = {}
        if isinstance(self.input, dict):
            out.update(self.input)
        out["input"] = self.input_text
        return out


def _read_text(path: Path) -> str:
    if not path.exists():
        raise DataError(path, "no such file", fix="check the path")
    if path.is_dir():
        raise DataError(path, "is a directory, not a dataset file", fix="pass a .jsonl, .json or .csv file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            path, f"bytes are not UTF-8 (offset {e.start})", line=line, fix="re-save the file as UTF-8"
        ) from None
    if not text.strip():
        raise DataError(path, "the file is empty", fix="add at least one row")
    return text


def _lines(text: str) -> list[str]:
    """Lines split on \\n only: U+2028, U+2029 and U+0085 are ordinary characters inside a JSON string or a CSV
    field (str.splitlines would cut a row there). A file with CR-only line ends (old Mac exports) is split on CR:
    a raw CR cannot occur inside a JSON string, so there it can only end a line."""
    if "\n" not in text and "\r" in text:
        return text.split("\r")
    return [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]


def _check_row(path: Path, n: int, row: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DataError(path, f"expected a JSON object, got {type(row).__name__}", line=n,
                        fix='write rows as {"input": ..., "ideal": ...}')
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(path, "a string holds an unpaired surrogate escape (such as \\ud800)", line=n,
                        fix="remove the broken escape or re-export the file as UTF-8") from None
    except RecursionError:
        raise DataError(path, "JSON nested too deeply", line=n, fix="flatten the row") from None
    return row


def _rows_jsonl(path: Path, text: str) -> Iterable[tuple[int, dict[str, Any]]]:
    for n, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                path, f"invalid JSON ({e.msg} at column {e.colno})", line=n,
                fix="make each line one complete JSON object",
            ) from None
        except RecursionError:
            raise DataError(path, "JSON nested too deeply", line=n, fix="flatten the row") from None
        yield n, _check_row(path, n, row)


def _rows_json_array(path: Path, text: str) -> Iterable[tuple[int, dict[str, Any]]]:
    """A JSON array of row objects (`[{...}, {...}]`, pretty-printed or not), read one element at a time so an
    error names the line of the element at fault."""
    decoder = json.JSONDecoder()

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def skip(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    i = skip(0) + 1  # past "["
    while True:
        i = skip(i)
        if i < len(text) and text[i] == "]":
            break
        try:
            row, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise DataError(path, f"invalid JSON ({e.msg} at column {e.colno})", line=e.lineno,
                            fix="make the file one JSON array of objects, or one object per line (.jsonl)") from None
        except RecursionError:
            raise DataError(path, "JSON nested too deeply", line=line_of(i), fix="flatten the row") from None
        yield line_of(i), _check_row(path, line_of(i), row)
        i = skip(end)
        if i < len(text) and text[i] == ",":
            i += 1
        elif not (i < len(text) and text[i] == "]"):
            raise DataError(path, "expected `,` or `]` after a row", line=line_of(i),
                            fix="make the file one JSON array of objects, or one object per line (.jsonl)")
    if skip(i + 1) < len(text):
        raise DataError(path, "more text after the JSON array", line=line_of(skip(i + 1)),
                        fix="keep one array per file, or write one object per line (.jsonl)")


_DELIMITERS = ",;\t|"


def _rows_csv(path: Path, text: str) -> Iterable[tuple[int, dict[str, Any]]]:
    header = text.split("\n", 1)[0]
    try:
        delimiter = csv.Sniffer().sniff(header, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    csv.field_size_limit(2**31 - 1)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        if not reader.fieldnames:
            raise DataError(path, "no header row", line=1, fix="put column names on the first line")
        for row in reader:
            n = reader.line_num
            if None in row:
                raise DataError(path, "more values than header columns", line=n,
                                fix="quote values that contain the delimiter")
            yield n, {k: v for k, v in row.items() if k is not None}
    except csv.Error as e:
        raise DataError(path, f"unreadable CSV ({e})", line=reader.line_num,
                        fix="check the quoting; values with quotes or line breaks must be quoted") from None


def _messages_input(path: Path, n: int, messages: Any) -> tuple[tuple[dict[str, str], ...], str]:
    if not isinstance(messages, list) or not messages:
        raise DataError(path, "`messages` must be a non-empty list of {role, content}", line=n,
                        fix="use the OpenAI chat format")
    out = []
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(path, "each message needs `role` and `content`", line=n, fix="use the OpenAI chat format")
        out.append({"role": str(m["role"]), "content": str(m["content"])})
    users = [m["content"] for m in out if m["role"] == "user"]
    return tuple(out), "\n\n".join(users) if users else out[-1]["content"]


def _to_case(path: Path, n: int, row: dict[str, Any], input_field: str | None, ideal_field: str | None,
             index: int, aside: Sequence[str] = ()) -> Case:
    extra = {k: row[k] for k in aside if k in row}
    row = {k: v for k, v in row.items() if k not in extra}  # kept aside: never part of the input
    ideal_key = ideal_field or "ideal"
    if ideal_field is None and "ideal" not in row:  # common names for the reference column
        ideal_key = next((k for k in REFERENCE_NAMES if k in row), "ideal")
    if ideal_field and ideal_field not in row:
        raise DataError(path, f"row has no field `{ideal_field}` (given by --ideal-field)", line=n,
                        fix=f"add `{ideal_field}` or pick another --ideal-field; fields here: {sorted(row)}")
    ideal_raw = row.get(ideal_key)
    ideal = None if ideal_raw is None or ideal_raw == "" else (
        ideal_raw if isinstance(ideal_raw, str) else json.dumps(ideal_raw, ensure_ascii=False))
    case_id = str(row.get("id", index))
    messages = None
    if input_field:
        if input_field not in row:
            raise DataError(path, f"row has no field `{input_field}` (given by --input-field)", line=n,
                            fix=f"add `{input_field}` or pick another --input-field; fields here: {sorted(row)}")
        value: Any = row[input_field]
    elif "input" in row:
        value = row["input"]
    elif "messages" in row:
        messages, value = _messages_input(path, n, row["messages"])
    else:
        value = {k: v for k, v in row.items() if k not in RESERVED and k != ideal_key}
        if not value:
            raise DataError(path, "row has no input (no `input`, `messages` or other fields)", line=n,
                            fix="add an `input` field, or name the input column with --input-field")
    if value is None or (isinstance(value, (str, dict, list)) and not (value.strip() if isinstance(value, str)
                                                                     else value)):
        raise DataError(path, "the input is empty", line=n, fix="give every row a non-empty input")
    if not isinstance(value, (str, dict)):
        value = json.dumps(value, ensure_ascii=False) if isinstance(value, list) else str(value)
    return Case(id=case_id, input=value, ideal=ideal, messages=messages, line=n, source=str(path), extra=extra)


def fingerprint(cases: Sequence[Case]) -> str:
    """A hash of everything a run's scores depend on in its cases: ids, inputs, references, extra fields and their
    order (the split follows the order). A resumed run, or a worker on another machine, must score these cases."""
    h = hashlib.sha256()
    for c in cases:
        h.update(json.dumps([c.id, c.input, c.ideal, c.messages, c.extra], sort_keys=True, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def load_dataset(path: str | Path, *, input_field: str | None = None, ideal_field: str | None = None,
                 aside: Sequence[str] = ()) -> list[Case]:
    """Read and validate a dataset. Raises :class:`DataError` naming the file, line and fix. Columns in `aside`
    (recorded responses, human labels) go to `Case.extra`, never into the input."""
    p = Path(path)
    text = _read_text(p)
    suffix = p.suffix.lower()
    rows = (_rows_csv(p, text) if suffix in (".csv", ".tsv") else
            _rows_json_array(p, text) if text.lstrip().startswith("[") else _rows_jsonl(p, text))
    cases: list[Case] = []
    seen: dict[str, int] = {}
    for i, (n, row) in enumerate(rows):
        case = _to_case(p, n, row, input_field, ideal_field, i, aside)
        if case.id in seen:
            raise DataError(p, f"duplicate id {case.id!r} (first on line {seen[case.id]})", line=n,
                            fix="make every `id` unique or drop the field")
        seen[case.id] = n
        cases.append(case)
    if not cases:
        raise DataError(p, "no rows", fix="add at least one row")
    return cases


def is_categorical(cases: Sequence[Case], max_labels: int = 20) -> bool:
    """True when references look like class labels (few distinct, short)."""
    ideals = [c.ideal for c in cases if c.ideal is not None]
    if len(ideals) < len(cases) or not ideals:
        return False
    labels = set(ideals)
    return len(labels) <= max(2, min(max_labels, len(ideals) // 2)) and all(
        len(re.findall(r"\w+", x)) <= 5 for x in labels)


def default_max_tokens(cases: Sequence[Case]) -> int | None:
    """A completion cap that fits the references: small for labels, generous (twice the longest) for free text;
    None when some case has no reference. A rambling answer to a one-word task costs time and, under a
    `contains` metric, often names a wrong label too."""
    ideals = [c.ideal for c in cases if c.ideal]
    if not ideals or len(ideals) < len(cases):
        return None
    longest = max(len(x) for x in ideals) / 3.5 + 1  # ~tokens (English averages about 4 characters per token)
    if is_categorical(cases):
        return int(max(16, 3 * longest))
    return int(min(4096, max(64, 2 * longest)))


def labels(cases: Sequence[Case]) -> list[str]:
    return sorted({c.ideal for c in cases if c.ideal is not None})


def _balance(parts: list[list[Case]], names: list[str], cases: Sequence[Case]) -> None:
    """Trim val and test (parts 1 and 2) to the same number of cases per label, moving the rest to train."""
    if not is_categorical(cases):
        raise DataError(cases[0].source, "--balanced needs label references (a few short labels); these are free "
                        "text", fix="drop --balanced (it weighs every label alike on val and test)")
    for i, name in ((1, "val"), (2, "test")):
        by: dict[str, list[Case]] = {label: [] for label in names}
        for c in parts[i]:
            by[c.ideal or ""].append(c)
        rarest = min(by, key=lambda k: len(by[k]))
        keep = len(by[rarest])
        if keep == 0:
            n = sum(c.ideal == rarest for c in cases)
            raise DataError(cases[0].source, f"label {rarest!r} has {n} row(s): too few for a {name} split with "
                            "every label in it (--balanced)",
                            fix=f"add rows labelled {rarest!r}, give {name} a larger share with --split, or drop "
                                "--balanced")
        parts[i] = [c for label in names for c in by[label][:keep]]
        parts[0] += [c for label in names for c in by[label][keep:]]


@dataclass(frozen=True)
class Splits:
    train: tuple[Case, ...]
    val: tuple[Case, ...]
    test: tuple[Case, ...]


def default_fractions(n: int) -> tuple[float, float, float]:
    if n < 30:
        return (0.34, 0.33, 0.33)
    if n < 100:
        return (0.3, 0.35, 0.35)
    return (0.3, 0.3, 0.4)


def split(cases: Sequence[Case], fractions: tuple[float, float, float] | None = None, seed: int = 0,
          balanced: bool = False) -> Splits:
    """Seeded train/val/test split, stratified by label when references are categorical. `balanced` (label
    references only): val and test each keep as many cases of every label as their rarest label has there, and
    the other cases go to train, so a mean score on them weighs every label alike (accuracy there is balanced
    accuracy, and answering one label scores one over the number of labels)."""
    if len(cases) < 3:
        raise DataError(cases[0].source if cases else "dataset", f"{len(cases)} rows cannot be split three ways",
                        fix="use at least 3 rows (30+ for meaningful statistics)")
    fr = fractions or default_fractions(len(cases))
    total = sum(fr)
    fr = (fr[0] / total, fr[1] / total, fr[2] / total)
    rng = random.Random(seed)
    groups: dict[str, list[Case]] = defaultdict(list)
    strat = is_categorical(cases)
    for c in cases:
        groups[c.ideal if strat and c.ideal is not None else ""].append(c)
    parts: list[list[Case]] = [[], [], []]
    carry = [0.0, 0.0, 0.0]
    for key in sorted(groups):
        g = groups[key][:]
        rng.shuffle(g)
        # largest-remainder allocation with carry so small strata do not all round the same way
        want = [len(g) * f + c for f, c in zip(fr, carry)]
        counts = [int(w) for w in want]
        while sum(counts) < len(g):
            i = max(range(3), key=lambda j: want[j] - counts[j])
            counts[i] += 1
        carry = [w - c for w, c in zip(want, counts)]
        start = 0
        for i in range(3):
            parts[i].extend(g[start : start + counts[i]])
            start += counts[i]
    if balanced:
        _balance(parts, sorted(groups), cases)
    for p in parts:
        rng.shuffle(p)
    # never leave a split empty
    for i in range(3):
        if not parts[i]:
            donor = max(range(3), key=lambda j: len(parts[j]))
            parts[i].append(parts[donor].pop())
    return Splits(tuple(parts[0]), tuple(parts[1]), tuple(parts[2]))
