"""The workload of a run: its cases, the seeded split, the val index and the task facts; built once and shared
by the optimizer, the strategies and compare (each used to load, check and split on its own)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from statistics import median

from .config import DataSpec
from .data import Case, Splits, fingerprint, is_categorical, labels, load_dataset, split
from .errors import ConfigError
from .prompt import Prompt

_KIND_STOP = {"a", "an", "the", "is", "it", "one", "input", "text", "following", "given", "task", "prompt", "case",
              "answer", "response", "model", "user", "message", "data", "item", "example"}


@dataclass(frozen=True)
class TaskFacts:
    labels: tuple[str, ...]
    categorical: bool
    sentences: int | None  # typical number of sentences in references (free text)
    words: int | None
    kind: str = "text"  # what one input is: "review", "question", ... (from the prompt, else from the data)
    # free text: what the references do with their input, from their length and words alone: "condense" (much
    # shorter than the input: a summary), "rewrite" (about as long, mostly the input's own words), "" (neither)
    form: str = ""

    def as_text(self) -> str:
        if self.categorical:
            return f"Each input is a {self.kind}. The answer is one label out of: {', '.join(self.labels)}."
        if self.sentences:
            how = {"condense": " They are much shorter than the input: a summary of it.",
                   "rewrite": " They are about as long as the input and mostly use its own words: a rewrite of it."}
            return (f"Reference answers are free text, typically {self.sentences} sentence(s), about {self.words} "
                    f"words.{how.get(self.form, '')}")
        return "The answer is free text."


def input_kind(prompt_text: str, train: Sequence[Case]) -> str:
    """A noun for one input: taken from the starting prompt ("this review" -> review, "Here is a chat." -> chat),
    else "question" when most inputs are questions, else "text"."""
    pattern = r"\b(?:this|each|every|following|given|here is an?|here's an?)\s+([a-z]{3,})\b"
    for m in re.finditer(pattern, prompt_text.lower()):
        if m.group(1) not in _KIND_STOP:
            return m.group(1)
    inputs = [c.input_text.strip() for c in train]
    if inputs and sum(x.endswith("?") for x in inputs) >= 0.6 * len(inputs):
        return "question"
    return "text"


def task_facts(train: Sequence[Case], prompt_text: str = "") -> TaskFacts:
    kind = input_kind(prompt_text, train)
    if is_categorical(train):
        return TaskFacts(tuple(labels(train)), True, None, None, kind)
    ideals = [c.ideal for c in train if c.ideal]
    if not ideals:
        return TaskFacts((), False, None, None, kind)
    sents = [len([s for s in re.split(r"(?<=[.!?])\s+", x.strip()) if s]) for x in ideals]
    words = [len(x.split()) for x in ideals]
    return TaskFacts((), False, int(median(sents)), int(median(words)), kind, reference_form(train))


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def reference_form(train: Sequence[Case]) -> str:
    """What the references do with their inputs (TaskFacts.form): "condense" when they are at most half as long
    (median words), "rewrite" when they are 0.5-1.5 times as long and at least 60% of their words appear in the
    input, else "". No model call: the lengths and the words of the train cases."""
    pairs = [(_words(c.input_text), _words(c.ideal)) for c in train if c.ideal]
    pairs = [(i, r) for i, r in pairs if i and r]
    if len(pairs) < 3:
        return ""
    ratio = median(len(r) for _, r in pairs) / median(len(i) for i, _ in pairs)
    overlap = median(sum(w in seen for w in r) / len(r) for seen, r in ((set(i), r) for i, r in pairs))
    if ratio <= 0.5:
        return "condense"
    if ratio <= 1.5 and overlap >= 0.6:
        return "rewrite"
    return ""


@dataclass(frozen=True)
class Workload:
    cases: tuple[Case, ...]
    splits: Splits
    index: Mapping[str, int]  # val case id -> its position (the step it is reported at)
    facts: TaskFacts
    path: str = ""  # the dataset file, for messages

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.cases)

    def check_fingerprint(self, known: str | None) -> None:
        """Stop before any call when a run's scores are for another copy of the dataset (`known`: the
        fingerprint the run recorded; None when it recorded none)."""
        if known is not None and known != self.fingerprint:
            raise ConfigError(f"{self.path}: the dataset is not the one this run started on (its cases, references "
                              "or order changed), so the run's stored scores are not for these cases",
                              fix="restore the file the run started on (a worker needs the same file as the machine "
                                  "that started the run), or start a new run on this one: calls already paid are "
                                  "answered from the response cache")

    @property
    def train(self) -> tuple[Case, ...]:
        return self.splits.train

    @property
    def val(self) -> list[Case]:
        return list(self.splits.val)

    @property
    def test(self) -> list[Case]:
        return list(self.splits.test)

    @classmethod
    def load(cls, data: DataSpec, prompt: Prompt, *, fractions: tuple[float, float, float] | None = None,
             seed: int = 0, balanced: bool = False, check_fields: bool = True, aside: Sequence[str] = (),
             transform: Callable[[list[Case]], list[Case]] | None = None) -> Workload:
        """Read and validate the dataset (`aside`: columns kept with each row; `transform`: the rows as another
        task's cases, such as alignment's), check the prompt's placeholders against it, split it (seeded;
        `balanced`: data.split's, val and test with as many cases of each label)."""
        cases = load_dataset(data.path, input_field=data.input_field, ideal_field=data.ideal_field, aside=aside)
        if transform is not None:
            cases = transform(cases)
        if check_fields:  # a pipeline's prompts are filled by its own code
            prompt.check_fields(cases)
        splits = split(cases, fractions, seed=seed, balanced=balanced)
        return cls(tuple(cases), splits, {c.id: i for i, c in enumerate(splits.val)},
                   task_facts(splits.train, prompt.text), data.path)
