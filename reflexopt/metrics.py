"""Deterministic scorers: exact, contains, regex, f1, rouge-l, json, json-schema, max-length.

A metric spec is `name` or `name:argument` (`regex:^\\d+$`, `json-schema:schema.json`, `max-length:280`).
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .custom_metric import custom_result, is_user_metric, user_metric
from .data import Case, is_categorical, labels
from .errors import ConfigError, DataError, MetricError


@dataclass(frozen=True)
class Score:
    """One scored output. `value` is in 0..1; None when scoring failed (`error` says why)."""

    value: float | None
    passed: bool | None
    reasoning: str = ""
    category: str | None = None
    error: str | None = None
    raw: float | None = None
    calls: int = 0  # paid model calls spent on scoring (judges)
    budget_exhausted: bool = False  # the run's budget refused a scoring call (the typed out-of-budget signal)
    flag: str | None = None  # a judge verdict whose reasoning contradicts its score: why


_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    text = text.lower().translate(_PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def changes_input(input_text: str, ideal: str | None) -> bool:
    """The reference differs from its input (normalised: case, punctuation, articles and spacing aside)."""
    return ideal is not None and normalize(ideal) != normalize(input_text)


def repeats_input(input_text: str, ideal: str | None, output: str) -> bool:
    """The answer repeats its input unchanged (normalised as above) where the reference changes it. Such an
    answer has not made the change the task asks for, whatever it means."""
    said = normalize(output or "")
    return bool(said) and said == normalize(input_text) and changes_input(input_text, ideal)


SHORT_INPUT = 12  # words: an input this short can be given back inside a one-line answer


def gives_input_back(input_text: str, ideal: str | None, output: str) -> bool:
    """The answer holds its short input (up to SHORT_INPUT words, normalised as above, as a phrase) and not the
    reference, where the reference changes the input: it talks about the input without giving the answer
    (`The word "legitimate" is a verb` for *illegitimate*). The copy's wider twin."""
    said, given, ref = (f" {normalize(x)} " for x in (output or "", input_text, ideal or ""))
    return (given.strip() != "" and len(given.split()) <= SHORT_INPUT and changes_input(input_text, ideal)
            and given in said and ref not in said)


def matches_reference(ideal: str | None, output: str) -> bool:
    """The answer says exactly what a (non-empty) reference says, normalised as above."""
    said = normalize(output or "")
    return bool(said) and ideal is not None and said == normalize(ideal)


def _strip_fences(text: str) -> str:
    m = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    return (m.group(1) if m else text).strip()


def exact(output: str, ideal: str | None, **_: Any) -> float:
    return float(normalize(output) == normalize(ideal or ""))


@lru_cache(maxsize=4096)
def _label_pattern(label: str) -> re.Pattern[str] | None:
    """A label as a pattern over normalised text: its words (split at spaces, punctuation and camel case:
    `top_up_failed`, `AddToPlaylist`, `not hate`) in order, with or without spaces between them. So an answer
    that writes a label's words ("top up failed", "add to playlist") names it, as one that copies it does (its
    underscores are deleted with the punctuation: "topupfailed"). None for a label with no words."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", label)
    words = normalize(re.sub(rf"[{re.escape(string.punctuation)}]", " ", spaced)).split()
    if not words:
        return None
    return re.compile(r"(?<![a-z0-9])" + r"\s*".join(map(re.escape, words)) + r"(?![a-z0-9])")


def _has(label: str, text: str) -> bool:
    """`label` (as written: a reference or a label of the set) is named in `text` (normalised)."""
    pattern = _label_pattern(label)
    return pattern is not None and pattern.search(text) is not None


def contains(output: str, ideal: str | None, *, label_set: Sequence[str] = (), **_: Any) -> float:
    """1 when the reference label appears in the output and no other label does."""
    out = normalize(output)
    want = normalize(ideal or "")
    if not want or not _has(ideal or "", out):
        return 0.0
    others = [x for x in label_set if normalize(x) != want]
    # a label that contains the wanted one as a word (e.g. "not positive") still counts as another label
    return 0.0 if any(_has(o, out) and not _has(o, want) for o in others) else 1.0


COLLAPSE_SHARE = 0.9  # at least this share of a candidate's answers name one label...
COLLAPSE_REFERENCES = 0.7  # ...which the references give to at most this share of the same cases


def named_label(output: str, labels: Sequence[str]) -> str | None:
    """The one label an answer names (a label inside a longer one, "positive" in "not positive", is the longer
    one); None when it names none or several."""
    out = normalize(output)
    named = [x for x in labels if _has(x, out)]
    named = [x for x in named if not any(o != x and _has(x, normalize(o)) for o in named)]
    return named[0] if len(named) == 1 else None


def collapsed_label(outputs: Sequence[str], ideals: Sequence[str | None], labels: Sequence[str],
                    min_cases: int = 10) -> tuple[str, int] | None:
    """The label a prompt answers whatever the case, and how many answers name it: at least COLLAPSE_SHARE of
    the answers name it, while the references give it to at most COLLAPSE_REFERENCES of the same cases (a set
    whose references are nearly all one label cannot tell a constant answer from a right one). None for a prompt
    that varies its answers, a task with fewer than two labels, or fewer than `min_cases` answers."""
    if len(labels) < 2 or len(outputs) < min_cases:
        return None
    named = [named_label(o, labels) for o in outputs]
    top = max(set(named) - {None}, key=named.count, default=None)
    if top is None:
        return None
    n = named.count(top)
    wanted = sum(normalize(i or "") == normalize(top) for i in ideals)
    if n >= COLLAPSE_SHARE * len(outputs) and wanted <= COLLAPSE_REFERENCES * len(ideals):
        return top, n
    return None


def collapsed_text(hit: Mapping[str, Any]) -> str:
    """How the run's views say that a prompt collapsed (`hit`: the record pruning.collapse or label_report
    made)."""
    return f"answers {hit['label']!r} {hit['answers']} of {hit['of']} times (collapsed)"


def label_report(outputs: Sequence[str], ideals: Sequence[str | None], labels: Sequence[str], *,
                 exact: bool = False) -> dict[str, Any] | None:
    """Macro-F1 over the labels of a label task, beside accuracy (a set where one label dominates can score a
    high accuracy with a prompt that answers that label), and balanced accuracy (the mean over the references'
    labels of the share of their cases answered right: one answer to everything gets one over the number of
    labels, whatever their mix): each answer counts as the one label it names
    (`named_label`; with `exact`, only an answer that is the label), or as no label. The labels are `labels`
    and any reference outside them; a label with no reference and no answer is left out. None with fewer than
    two labels or no answers."""
    gold = [normalize(i or "") for i in ideals]
    names = {normalize(x): x for x in labels}
    for g in gold:
        names.setdefault(g, g)
    names.pop("", None)
    if len(names) < 2 or not outputs:
        return None
    if exact:
        pred = [normalize(o) if normalize(o) in names else None for o in outputs]
    else:
        pred = [normalize(n) if (n := named_label(o, list(names.values()))) else None for o in outputs]
    per: dict[str, float] = {}
    for key, shown in names.items():
        tp = sum(p == key and g == key for p, g in zip(pred, gold))
        wrong = sum(p == key and g != key for p, g in zip(pred, gold)) + sum(g == key and p != key
                                                                            for p, g in zip(pred, gold))
        if tp or wrong:
            per[shown] = round(2 * tp / (2 * tp + wrong), 4)
    if not per:
        return None
    recall = [sum(p == key and g == key for p, g in zip(pred, gold)) / refs for key in names
              if (refs := sum(g == key for g in gold))]
    out: dict[str, Any] = {"macro_f1": round(sum(per.values()) / len(per), 4), "f1_by_label": per,
                           "balanced_accuracy": round(sum(recall) / len(recall), 4) if recall else None,
                           "no_label": sum(p is None for p in pred), "n": len(pred)}
    hit = collapsed_label(outputs, ideals, list(names.values()))
    if hit is not None:  # one answer whatever the case: its accuracy is what that constant answer gets
        out["collapsed"] = {"label": hit[0], "answers": hit[1], "of": len(outputs)}
    return out


def token_f1(output: str, ideal: str | None, **_: Any) -> float:
    pred, ref = normalize(output).split(), normalize(ideal or "").split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    p, r = common / len(pred), common / len(ref)
    return 2 * p * r / (p + r)


@lru_cache(maxsize=1)
def _rouge() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(output: str, ideal: str | None, **_: Any) -> float:
    if not output.strip() or not (ideal or "").strip():
        return 0.0
    return float(_rouge().score(ideal or "", output)["rougeL"].fmeasure)


def json_valid(output: str, ideal: str | None, **_: Any) -> float:
    try:
        json.loads(_strip_fences(output))
        return 1.0
    except ValueError:
        return 0.0


@dataclass(frozen=True)
class MetricDef:
    name: str
    fn: Callable[..., float]
    needs_reference: bool
    threshold: float
    help: str
    arg: str | None = None  # name of the required argument, if any


METRICS: dict[str, MetricDef] = {
    "exact": MetricDef("exact", exact, True, 1.0, "normalised exact match with the reference"),
    "contains": MetricDef("contains", contains, True, 1.0, "reference label present and no other label"),
    "regex": MetricDef("regex", lambda o, i, **k: 0.0, False, 1.0, "output matches a regular expression", "PATTERN"),
    "f1": MetricDef("f1", token_f1, True, 0.5, "token F1 against the reference"),
    "rouge-l": MetricDef("rouge-l", rouge_l, True, 0.5, "ROUGE-L F-measure against the reference"),
    "json": MetricDef("json", json_valid, False, 1.0, "output is valid JSON"),
    "json-schema": MetricDef("json-schema", lambda o, i, **k: 0.0, False, 1.0, "output validates against a JSON "
                             "schema file", "SCHEMA.json"),
    "max-length": MetricDef("max-length", lambda o, i, **k: 0.0, False, 1.0, "output at most N characters", "N"),
}


def canonical_name(name: str) -> str:
    """A metric's name as registered (`ROUGE_L`, `rougel` -> `rouge-l`)."""
    name = name.strip().lower().replace("_", "-")
    return {"rougel": "rouge-l", "rouge": "rouge-l", "json-valid": "json", "maxlen": "max-length"}.get(name, name)


class MetricScorer:
    """Scores outputs with a deterministic metric. No model calls."""

    kind = "metric"

    def __init__(self, spec: str, cases: Sequence[Case] = ()) -> None:
        self._custom: Callable[[str, Case], Any] | None = None
        if is_user_metric(spec):
            self._custom = user_metric(spec)
            self.defn = MetricDef(spec, lambda o, i, **k: 0.0, False, 0.5, f"custom metric {spec}")
            self.name = spec
            self.label_set = []
            return
        name, _, arg = spec.partition(":")
        name = canonical_name(name)
        if name not in METRICS:
            raise MetricError(f"unknown metric {spec!r}", fix=f"use one of {', '.join(METRICS)}")
        self.defn = METRICS[name]
        self.name = spec if arg else name
        if self.defn.arg and not arg:
            raise MetricError(f"metric {name} needs an argument", fix=f"write --metric {name}:{self.defn.arg}")
        self._fn = self._bind(name, arg)
        self.label_set = labels(cases) if is_categorical(cases) else []
        self.validate(cases)

    def validate(self, cases: Sequence[Case]) -> None:
        """Every row this metric will score has what it needs (a reference, where the metric reads one)."""
        name = self.defn.name if self._custom is None else self.name
        for c in cases:
            if self._custom is None and self.defn.needs_reference and c.ideal is None:
                raise DataError(c.source, f"row has no reference (`ideal`), which metric {name} needs", line=c.line,
                                fix="add `ideal` to every row, map it with --ideal-field, or use --judge")

    def _bind(self, name: str, arg: str) -> Callable[..., float]:
        if name == "regex":
            try:
                pattern = re.compile(arg, re.S)
            except re.error as e:
                raise MetricError(f"invalid regular expression {arg!r}: {e}", fix="fix the pattern") from None
            return lambda o, i, **k: float(pattern.search(o) is not None)
        if name == "max-length":
            if not arg.isdigit():
                raise MetricError(f"max-length needs a whole number, got {arg!r}", fix="write --metric max-length:280")
            limit = int(arg)
            return lambda o, i, **k: float(len(o.strip()) <= limit)
        if name == "json-schema":
            return self._schema_fn(Path(arg))
        return self.defn.fn

    @staticmethod
    def _schema_fn(path: Path) -> Callable[..., float]:
        import jsonschema

        if not path.exists():
            raise MetricError(f"{path}: no such schema file", fix="pass an existing JSON schema file")
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
            validator = jsonschema.validators.validator_for(schema)(schema)
            validator.check_schema(schema)
        except (ValueError, jsonschema.SchemaError) as e:
            raise MetricError(f"{path}: not a valid JSON schema ({str(e).splitlines()[0]})",
                              fix="fix the schema file") from None

        def check(output: str, ideal: str | None, **_: Any) -> float:
            try:
                return float(validator.is_valid(json.loads(_strip_fences(output))))
            except ValueError:
                return 0.0

        return check

    def corpus(self, outputs: Sequence[str], ideals: Sequence[str | None]) -> dict[str, Any] | None:
        """Figures over a whole set of answers, beside the mean score: macro-F1 for a label metric on a label
        task (`label_report`), else None."""
        if self._custom is not None or self.defn.name not in ("contains", "exact") or not self.label_set:
            return None
        return label_report(outputs, ideals, self.label_set, exact=self.defn.name == "exact")

    def explain(self) -> str:
        """What this metric accepts, in one clause (shown in the run header)."""
        return {
            "contains": "an answer counts when it names the reference label and no other label",
            "exact": "an answer counts when it equals the reference, ignoring case and spaces",
            "f1": "token overlap with the reference, 0..1",
            "rouge-l": "longest-common-subsequence overlap with the reference, 0..1",
        }.get(self.defn.name, self.defn.help)

    def describe(self) -> str:
        return f"metric {self.name} ({self.defn.help})"

    async def score(self, case: Case, output: str) -> Score:
        return self.score_sync(case, output)

    def score_sync(self, case: Case, output: str) -> Score:
        if self._custom is not None:
            return self._score_custom(case, output)
        value = self._fn(output, case.ideal, label_set=self.label_set)
        passed = value >= self.defn.threshold
        if passed:
            category = None
        elif self.defn.name in ("exact", "contains"):
            category = "wrong answer"
        elif self.defn.needs_reference:
            category = f"low {self.defn.name} (< {self.defn.threshold})"
        else:
            category = f"fails {self.name}"
        return Score(value, passed, category=category, raw=value)


    def _score_custom(self, case: Case, output: str) -> Score:
        assert self._custom is not None
        try:
            raw = self._custom(output, case)
        except Exception as e:  # noqa: BLE001 - a failing user metric is a scoring error for that case
            return Score(None, None, error=f"custom metric {self.name} failed: {type(e).__name__}: {e}"[:300])
        got = custom_result(raw)
        if got is None:
            return Score(None, None, error=f"custom metric {self.name} returned {raw!r}"[:200] + "; return a bool, a "
                         "number in 0..1, (score, feedback) or {'score': ..., 'feedback': ...}")
        value, feedback, category = got
        passed = value >= self.defn.threshold
        return Score(value, passed, reasoning=feedback,
                     category=None if passed else (category or f"fails {self.name}"), raw=value)


def default_metric(cases: Sequence[Case]) -> str:
    """A sensible metric for a dataset with references (raise when there are none)."""
    if not cases or any(c.ideal is None for c in cases):
        missing = next((c for c in cases if c.ideal is None), None)
        where = f"{missing.source} line {missing.line}" if missing else "the dataset"
        raise ConfigError(f"no --judge or --metric given and {where} has no reference (`ideal`)",
                          fix="add --judge MODEL (with --judge-criteria RUBRIC) or a reference-free metric: "
                          "--metric json | regex:PATTERN | max-length:N | json-schema:FILE")
    if is_categorical(cases):
        return "contains"
    mean_words = sum(len((c.ideal or "").split()) for c in cases) / len(cases)
    return "f1" if mean_words <= 6 else "rouge-l"
