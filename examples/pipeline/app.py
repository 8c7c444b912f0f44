"""A two-step review classifier, written the way an application would be: a first step labels the review, a
second step checks that label against the text and has the last word when it names a label. Its model calls go
through the openai SDK, which reads OPENAI_BASE_URL and OPENAI_API_KEY: during a reflexopt run they point at
reflexopt's endpoint (so every call is cached, counted and capped); point them at any OpenAI-compatible server
to run the app yourself.

    reflexopt optimize examples/pipeline/data.jsonl --pipeline examples/pipeline/app.py:run \\
        --prompt answer=examples/pipeline/prompts/answer.md --prompt check=examples/pipeline/prompts/check.md \\
        --metric contains --max-trials 10 -o tuned/
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openai import OpenAI

client = OpenAI()
MODEL = "app-model"  # reflexopt's endpoint serves the model under test, whatever name the app asks for
LABELS = ("positive", "negative")


def ask(prompt: Any, user: str) -> str:
    """One call. `prompt` is a tuned prompt: a str, and `.messages(text)` gives the chat messages with its
    examples as chat turns (small models follow those best); an app may use the str instead."""
    reply = client.chat.completions.create(model=MODEL, temperature=0, max_tokens=8, messages=prompt.messages(user))
    return (reply.choices[0].message.content or "").strip()


def names_one_label(text: str) -> bool:
    return sum(label in text.lower() for label in LABELS) == 1


def run(review: str, prompts: Mapping[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """The pipeline: `prompts` holds the texts being tuned, by name. Returns the answer and a trace."""
    first = ask(prompts["answer"], review)
    checked = ask(prompts["check"], f"{review}\n(Proposed label: {first})")
    final = checked if names_one_label(checked) else first
    return final, [{"step": "answer", "output": first}, {"step": "check", "output": checked}]
