"""A candidate is a set of named prompts. Today's single prompt file is the set with one prompt, named
`prompt`; pipeline mode fills several names at once. Strategies and operators work on one named prompt at a
time (`PromptSet.replace`), so a second name changes nothing in them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .prompt import Prompt, load_prompt, parse_prompt

DEFAULT_NAME = "prompt"


@dataclass(frozen=True)
class PromptSet(Mapping[str, Prompt]):
    """Named prompts, in a fixed order (the first is the primary one)."""

    items_: tuple[tuple[str, Prompt], ...]

    def __post_init__(self) -> None:
        if not self.items_:
            raise ValueError("a prompt set needs at least one prompt")
        names = [n for n, _ in self.items_]
        if len(set(names)) != len(names):
            raise ValueError(f"prompt names repeat: {names}")

    @classmethod
    def of(cls, prompts: Prompt | Mapping[str, Prompt] | PromptSet) -> PromptSet:
        if isinstance(prompts, PromptSet):
            return prompts
        if isinstance(prompts, Prompt):
            return cls(((DEFAULT_NAME, prompts),))
        return cls(tuple(prompts.items()))

    def __getitem__(self, name: str) -> Prompt:
        for n, p in self.items_:
            if n == name:
                return p
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return (n for n, _ in self.items_)

    def __len__(self) -> int:
        return len(self.items_)

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.items_)

    @property
    def primary(self) -> Prompt:
        return self.items_[0][1]

    def replace(self, name: str, prompt: Prompt) -> PromptSet:
        """This set with `name`'s prompt replaced."""
        if name not in self.names:
            raise KeyError(name)
        return PromptSet(tuple((n, prompt if n == name else p) for n, p in self.items_))

    @property
    def key(self) -> str:
        """Render-equivalent sets share a key. One prompt: that prompt's own key (so stored runs and the cache
        keep their keys)."""
        if len(self.items_) == 1:
            return self.primary.key
        raw = json.dumps([[n, p.key] for n, p in self.items_])
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def to_markdown(self) -> str:
        """One prompt: its markdown file. Several: a JSON object of name -> markdown (read by `parse`)."""
        if len(self.items_) == 1:
            return self.primary.to_markdown()
        return json.dumps({n: p.to_markdown() for n, p in self.items_}, ensure_ascii=False, indent=1)

    @classmethod
    def load(cls, path: str | Path) -> PromptSet:
        """A prompt file as the set of its one prompt."""
        return cls.of(load_prompt(path))

    @classmethod
    def load_named(cls, pairs: Sequence[tuple[str, str]]) -> PromptSet:
        """Several prompt files, by name (a pipeline's `--prompt NAME=FILE`)."""
        return cls(tuple((name, load_prompt(path)) for name, path in pairs))

    @classmethod
    def parse(cls, text: str, source: str = "<prompt>") -> PromptSet:
        """Read what `to_markdown` wrote."""
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except ValueError:
                data = None
            if isinstance(data, dict) and data and all(isinstance(v, str) for v in data.values()):
                return cls(tuple((str(n), parse_prompt(v, f"{source}:{n}")) for n, v in data.items()))
        return cls.of(parse_prompt(text, source))


def diff_lines(before: str, after: str, sides: tuple[str, str] = ("baseline", "best")) -> list[str]:
    """A unified diff of two stored candidates (prompt files, or sets of named prompts: one diff per name)."""
    import difflib

    a, b = PromptSet.parse(before), PromptSet.parse(after)
    if len(a) > 1 and a.names == b.names:
        return [line for n in a.names for line in difflib.unified_diff(
            a[n].to_markdown().splitlines(), b[n].to_markdown().splitlines(), f"{sides[0]} {n}", f"{sides[1]} {n}",
            lineterm="")]
    return list(difflib.unified_diff(before.splitlines(), after.splitlines(), *sides, lineterm=""))
