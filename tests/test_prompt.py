from __future__ import annotations

from pathlib import Path

import pytest

from reflexopt.data import Case
from reflexopt.errors import PromptError
from reflexopt.prompt import Demo, Prompt, load_prompt, parse_prompt


def case(text: str = "great phone", **kw: object) -> Case:
    return Case(id="1", input=text, ideal="positive", line=1, source="d.jsonl", **kw)  # type: ignore[arg-type]


def test_no_placeholder_is_system_message() -> None:
    msgs = Prompt("Classify the sentiment.").render(case())
    assert msgs == [{"role": "system", "content": "Classify the sentiment."},
                    {"role": "user", "content": "great phone"}]


def test_placeholders_fill_and_literal_braces_and_json_untouched() -> None:
    p = Prompt('Review: {input}\nAnswer as {{"label": ...}} or {"label": "x"}')
    (msg,) = p.render(case())
    assert msg == {"role": "user", "content": 'Review: great phone\nAnswer as {"label": ...} or {"label": "x"}'}


def test_object_fields() -> None:
    c = Case(id="1", input={"question": "Why?", "context": "Because."}, line=1)
    (msg,) = Prompt("Q: {question}\nC: {context}").render(c)
    assert msg["content"] == "Q: Why?\nC: Because."


def test_missing_placeholder_names_prompt_line_and_row(tmp_path: Path) -> None:
    f = tmp_path / "p.md"
    f.write_text("Intro\n\nText: {text}\n", encoding="utf-8")
    p = load_prompt(f)
    with pytest.raises(PromptError) as ei:
        p.check_fields([case()])
    msg = str(ei.value)
    assert f"{f}:3" in msg and "{text}" in msg and "row 1 of d.jsonl" in msg and "{input}" in msg


def test_chat_rows_keep_their_messages_after_system() -> None:
    c = case(messages=({"role": "user", "content": "report"},))
    msgs = Prompt("Summarize.").render(c)
    assert msgs[0]["role"] == "system" and msgs[1] == {"role": "user", "content": "report"}


def test_user_role_demos_turns_and_cue() -> None:
    p = Prompt("Label it.", instruction_role="user", answer_cue="Label:", demos=(Demo("ok phone", "positive"),))
    msgs = p.render(case())
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[0]["content"].startswith("Label it.\n\nok phone")
    assert msgs[-1]["content"] == "great phone\n\nLabel:"


def test_inline_demos() -> None:
    p = Prompt("Label it.", demo_style="inline", demos=(Demo("ok phone", "positive"),))
    msgs = p.render(case())
    assert "Input: ok phone\nOutput: positive" in msgs[0]["content"] and len(msgs) == 2


def test_front_matter_round_trip() -> None:
    p = Prompt("Label it.\n", instruction_role="user", demo_style="inline", answer_cue="A:",
               demos=(Demo("x: {y}", "z"),))
    back = parse_prompt(p.to_markdown(), "best.md")
    assert back.with_(source=p.source) == p
    assert parse_prompt("Plain.\n").to_markdown() == "Plain.\n"


def test_bad_prompt_files(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="no such file"):
        load_prompt(tmp_path / "missing.md")
    (tmp_path / "e.md").write_text("  \n")
    with pytest.raises(PromptError, match="empty"):
        load_prompt(tmp_path / "e.md")
    (tmp_path / "f.md").write_text("---\nbogus: 1\n---\nHi\n")
    with pytest.raises(PromptError, match="unknown front matter"):
        load_prompt(tmp_path / "f.md")
    (tmp_path / "g.md").write_bytes(b"caf\xe9")
    with pytest.raises(PromptError, match="UTF-8"):
        load_prompt(tmp_path / "g.md")
