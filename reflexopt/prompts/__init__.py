"""Meta-prompts (judge, diagnose, propose) live here as text files, filled with `$name` placeholders."""

from __future__ import annotations

from importlib import resources
from string import Template


def meta_prompt(name: str, **values: object) -> str:
    text = resources.files(__package__).joinpath(f"{name}.md").read_text(encoding="utf-8")
    return Template(text).safe_substitute({k: str(v) for k, v in values.items()})
