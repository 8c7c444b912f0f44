"""Text from data (inputs, outputs, prompts with demos) shown to a person: control characters that would drive
the terminal (ESC sequences), corrupt a page (NUL) or reorder what is read (bidi overrides such as U+202E) are
shown as visible escapes instead. Tabs and newlines stay."""

from __future__ import annotations

import re
from typing import Any

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with each unsafe character as `\\xNN` / `\\uNNNN` (CR too: it would overwrite the line)."""
    return _UNSAFE.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)


def printable_data(obj: Any) -> Any:
    """`printable` applied to every string in a JSON-like structure."""
    if isinstance(obj, str):
        return printable(obj)
    if isinstance(obj, dict):
        return {k: printable_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [printable_data(v) for v in obj]
    return obj
