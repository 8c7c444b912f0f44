"""Meta-prompts (judge, diagnose, propose) live here as text files, filled with `$name` placeholders."""

from __future__ import annotations

import re
from importlib import resources
from string import Template


def meta_prompt(name: str, **values: object) -> str:
    text = resources.files(__package__).joinpath(f"{name}.md").read_text(encoding="utf-8")
    return Template(text).safe_substitute({k: str(v) for k, v in values.items()})


def inert(text: str, *tags: str) -> str:
    """Data placed in a meta-prompt, with the meta-prompt's own tags made inert (`</prompt>` becomes
    `&lt;/prompt`): data that closes its block, or writes a block a reply is read from, stays data, and a
    model that echoes it cannot hand it back as its answer."""
    pattern = re.compile(r"<(/?)\s*(" + "|".join(map(re.escape, tags)) + r")\b", re.I)
    return pattern.sub(r"&lt;\1\2", text)
