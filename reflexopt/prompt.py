"""Prompt files: markdown with `{field}` placeholders, optional front matter, rendering to chat messages.

A prompt file is plain markdown. `{input}` or `{field}` placeholders are filled from the row (`{{` and `}}`
give literal braces; other braces, such as a JSON example, are left alone). A prompt without placeholders is
the system message, sent exactly as written (no brace is an escape there), and the row's input is the user
message. In a prompt with placeholders, a doubled brace inside a code fence or JSON-looking text gets a
warning when the prompt is loaded (`brace_warnings`), since it is sent as a single brace.

Optional YAML front matter carries structural settings the optimizer may choose (and writes back into
`best.md`), so a tuned prompt file is self-contained::

    ---
    instruction_role: user      # system (default) | user
    demo_style: turns           # turns (chat turns, default) | inline (pasted into the instruction)
    answer_cue: "Label:"        # appended to the last user message
    demos:
      - {input: "great phone", output: "positive"}
    ---
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml

from .data import Case
from .errors import PromptError
from .yamlfile import load_yaml

_JSONISH = re.compile(r'"[^"\n]*"\s*:|\{\{\s*"')  # `"key":` or `{{"` on a line
_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_FRONT = re.compile(r"\A---\s*\n(.*?)\n---\s*\n?", re.S)

Message = dict[str, str]


@dataclass(frozen=True)
class Demo:
    input: str
    output: str


@dataclass(frozen=True)
class Prompt:
    """An instruction plus the structural choices that decide how it reaches the model."""

    text: str
    source: str = "<prompt>"
    instruction_role: Literal["system", "user"] = "system"
    demo_style: Literal["turns", "inline"] = "turns"
    answer_cue: str = ""
    demos: tuple[Demo, ...] = field(default=())

    @property
    def placeholders(self) -> list[str]:
        return list(dict.fromkeys(m.group(1) for m in _TOKEN.finditer(self.text) if m.group(1)))

    def with_(self, **changes: Any) -> Prompt:
        return replace(self, **changes)

    @cached_property
    def key(self) -> str:
        """Same key, same messages for every case: prompts that differ only in settings that do not change the
        rendering (demo style without demos, ...) share one key, so they are never paid for twice. The
        response memo and the run folder's evals are keyed by it. Computed once per prompt object."""
        return hashlib.sha256(self.canonical().to_markdown().encode()).hexdigest()[:16]

    def canonical(self) -> Prompt:
        """The same prompt with settings that cannot change the rendered messages reset to their defaults."""
        style = self.demo_style if self.demos else "turns"
        role = "system" if self.placeholders else self.instruction_role
        return replace(self, source="<prompt>", demo_style=style, instruction_role=role)

    def check_fields(self, cases: Sequence[Case]) -> None:
        """Raise PromptError when a placeholder is missing from the data."""
        for name in self.placeholders:
            for c in cases:
                if name not in c.fields():
                    line = next((i for i, ln in enumerate(self.text.splitlines(), 1) if "{" + name + "}" in ln), None)
                    have = ", ".join("{" + k + "}" for k in c.fields())
                    raise PromptError(
                        self.source, f"placeholder {{{name}}} is not a field of row {c.line} of {c.source}",
                        line=line, fix=f"use one of {have}, or write {{{{{name}}}}} for literal braces",
                    )

    def fill(self, case: Case) -> str:
        values = case.fields()

        def sub(m: re.Match[str]) -> str:
            tok = m.group(0)
            if tok == "{{":
                return "{"
            if tok == "}}":
                return "}"
            v = values.get(m.group(1))
            return str(v) if v is not None else tok

        return _TOKEN.sub(sub, self.text)

    def brace_warnings(self) -> list[str]:
        """Doubled braces that are escapes here (the prompt has placeholders) but look meant as written: inside
        a code fence, or on a line that looks like JSON. One line each, naming the file and line."""
        if not self.placeholders:
            return []
        out: list[str] = []
        fenced = False
        for i, line in enumerate(self.text.splitlines(), 1):
            if line.lstrip().startswith("```"):
                fenced = not fenced
                continue
            if ("{{" in line or "}}" in line) and (fenced or _JSONISH.search(line)):
                where = "a code fence" if fenced else "JSON-looking text"
                out.append(f"{self.source}:{i}: `{{{{` / `}}}}` in {where} is sent as one brace, because this prompt "
                           "has placeholders; write `{{{{` for `{{` (or drop the placeholders to send the "
                           "prompt as written)")
        return out

    def _instruction(self) -> str:
        base = self.text  # no placeholders: sent exactly as written
        if self.demos and self.demo_style == "inline":
            shots = "\n\n".join(f"Input: {d.input}\nOutput: {d.output}" for d in self.demos)
            base = f"{base.rstrip()}\n\nExamples:\n\n{shots}"
        return base.strip()

    def render(self, case: Case) -> list[Message]:
        """Chat messages for one case."""
        cue = f"\n\n{self.answer_cue}" if self.answer_cue else ""
        demo_turns: list[Message] = []
        if self.demos and self.demo_style == "turns":
            for d in self.demos:
                demo_turns += [{"role": "user", "content": d.input}, {"role": "assistant", "content": d.output}]
        if self.placeholders:
            filled = self.fill(case).strip()
            if self.demos and self.demo_style == "inline":
                filled = self._instruction_for_filled(filled)
            return [*demo_turns, {"role": "user", "content": filled + cue}]
        instruction = self._instruction()
        turns: list[Message] = list(case.messages) if case.messages else [{"role": "user", "content": case.input_text}]
        if turns and turns[-1]["role"] == "user" and cue:
            turns[-1] = {"role": "user", "content": turns[-1]["content"] + cue}
        if self.instruction_role == "system":
            return [{"role": "system", "content": instruction}, *demo_turns, *turns]
        first_user = next((i for i, t in enumerate(turns) if t["role"] == "user"), None)
        if demo_turns:
            demo_turns[0] = {"role": "user", "content": f"{instruction}\n\n{demo_turns[0]['content']}"}
        elif first_user is not None:
            turns[first_user] = {"role": "user", "content": f"{instruction}\n\n{turns[first_user]['content']}"}
        return [*demo_turns, *turns]

    def as_text(self) -> str:
        """The prompt as one text, for a program that builds its own messages (pipeline mode): the instruction
        as written (placeholders and braces untouched, for the program to fill), then the demos as inline
        examples, then the answer cue."""
        text = self.text.rstrip()
        if self.demos:
            shots = "\n\n".join(f"Input: {d.input}\nOutput: {d.output}" for d in self.demos)
            text = f"{text}\n\nExamples:\n\n{shots}"
        if self.answer_cue:
            text = f"{text}\n\n{self.answer_cue}"
        return text.strip()

    def _instruction_for_filled(self, filled: str) -> str:
        shots = "\n\n".join(f"Input: {d.input}\nOutput: {d.output}" for d in self.demos)
        return f"Examples:\n\n{shots}\n\n{filled}"

    def to_markdown(self) -> str:
        """The file form: front matter only for non-default settings."""
        meta: dict[str, Any] = {}
        if self.instruction_role != "system":
            meta["instruction_role"] = self.instruction_role
        if self.demos:
            meta["demo_style"] = self.demo_style
        if self.answer_cue:
            meta["answer_cue"] = self.answer_cue
        if self.demos:
            meta["demos"] = [{"input": d.input, "output": d.output} for d in self.demos]
        body = self.text.rstrip() + "\n"
        if not meta and not body.lstrip("\ufeff").startswith("---"):
            return body
        if not meta:  # a body that itself starts with a --- line (a rule, say) must not be read as front matter
            return "---\n{}\n---\n" + body
        return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=10_000) + "---\n" + body


def parse_prompt(text: str, source: str = "<prompt>") -> Prompt:
    meta: dict[str, Any] = {}
    m = _FRONT.match(text)
    if m:
        try:
            loaded = load_yaml(m.group(1)) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            what = " ".join((getattr(e, "problem", None) or str(e)).split())
            raise PromptError(source, f"front matter is not valid YAML ({what})",
                              line=mark.line + 2 if mark is not None else 1,
                              fix="fix the block between the --- lines") from None
        if not isinstance(loaded, dict):
            raise PromptError(source, "front matter must be a mapping", line=1, fix="use `key: value` lines")
        meta, text = loaded, text[m.end():]
    allowed = {"instruction_role", "demo_style", "answer_cue", "demos"}
    unknown = set(meta) - allowed
    if unknown:
        raise PromptError(source, f"unknown front matter keys {sorted(unknown)}", line=1,
                          fix=f"use only {sorted(allowed)}")
    if not text.strip():
        raise PromptError(source, "the prompt is empty", fix="write the instruction for the model")
    role = meta.get("instruction_role", "system")
    style = meta.get("demo_style", "turns")
    if role not in ("system", "user") or style not in ("turns", "inline"):
        raise PromptError(source, "instruction_role must be system|user and demo_style turns|inline", line=1,
                          fix="correct the front matter")
    try:
        demos = tuple(Demo(str(d["input"]), str(d["output"])) for d in meta.get("demos") or [])
    except (KeyError, TypeError):
        raise PromptError(source, "each demo needs `input` and `output`", line=1,
                          fix="correct the demos list") from None
    return Prompt(text=text.strip() + "\n", source=source, instruction_role=role, demo_style=style,
                  answer_cue=str(meta.get("answer_cue") or ""), demos=demos)


def load_prompt(path: str | Path) -> Prompt:
    p = Path(path)
    if not p.exists():
        raise PromptError(p, "no such file", fix="check the path to the prompt file")
    if not p.is_file():
        raise PromptError(p, "is a directory, not a prompt file", fix="pass the path of a markdown prompt file")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PromptError(p, f"bytes are not UTF-8 (offset {e.start})", fix="re-save the prompt as UTF-8") from None
    return parse_prompt(text, str(p))
