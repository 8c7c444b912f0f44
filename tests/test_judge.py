from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import SHARED

from reflexopt.config import ModelSpec
from reflexopt.data import Case
from reflexopt.errors import RubricError
from reflexopt.judge import JudgeScorer, Rubric, available_rubrics, load_rubric, parse_verdict
from reflexopt.models import FakeModel, get_client, register_fake, unregister_fake

R = Rubric(name="r", text="score it", low=1, high=5, pass_score=4)
CASE = Case(id="1", input="What is 2+2?", ideal="4", line=1)


def test_shipped_rubrics() -> None:
    names = set(available_rubrics())
    assert {"correctness", "faithfulness", "format", "classification", "summary", "helpfulness", "refusal"} <= names
    r = load_rubric("classification")
    assert (r.low, r.high, r.pass_score) == (1, 5, 5)


def test_rubric_scale_from_text_and_file() -> None:
    r = load_rubric(str(SHARED / "security_incidents_rubric.md"))
    assert (r.low, r.high, r.pass_score) == (1, 5, 4)
    assert r.normalise(5) == 1.0 and r.normalise(1) == 0.0 and r.normalise(3) == 0.5


def test_rubric_errors(tmp_path: Path) -> None:
    with pytest.raises(RubricError, match="no such rubric"):
        load_rubric("nonexistent-rubric")
    (tmp_path / "r.md").write_text("---\nscale: [5, 1]\n---\ntext")
    with pytest.raises(RubricError, match="empty"):
        load_rubric(str(tmp_path / "r.md"))
    (tmp_path / "t.md").write_text("---\nscale: [0, 10]\npass: 7\n---\nGrade it.")
    r = load_rubric(str(tmp_path / "t.md"))
    assert (r.low, r.high, r.pass_score) == (0, 10, 7)


@pytest.mark.parametrize(
    "reply, expected",
    [
        ('{"reasoning": "fine", "score": 5, "failure_category": "none"}', (5.0, "fine", "none")),
        ('Sure! ```json\n{"score": 2, "reasoning": "off", "failure_category": "Wrong Label"}\n```',
         (2.0, "off", "wrong label")),
        ("{'score': 3, 'reasoning': 'meh',}", (3.0, "meh", "")),
        ("score: 4", (4.0, "", "")),
        ('{"score": 9}', None),
        ("I think it is good", None),
        ('{"score": "high"}', None),
    ],
)
def test_parse_verdict(reply: str, expected: tuple[float, str, str] | None) -> None:
    assert parse_verdict(reply, R) == expected


def _judge(replies: list[str]) -> tuple[JudgeScorer, FakeModel]:
    fake = FakeModel(replies, cycle=False)
    register_fake("fake/judge", fake)
    return JudgeScorer(get_client(ModelSpec(id="fake/judge"), role="judge", cache=False), R), fake


def test_judge_scores_and_normalises() -> None:
    j, fake = _judge(['{"reasoning": "partly", "score": 3, "failure_category": "missing detail"}'])
    try:
        s = asyncio.run(j.score(CASE, "four-ish"))
        assert s.value == 0.5 and s.passed is False and s.category == "missing detail" and s.raw == 3
        sent = fake.calls[0][-1]["content"]
        assert "four-ish" in sent and "<reference>\n4\n</reference>" in sent and "What is 2+2?" in sent
    finally:
        unregister_fake("fake/judge")


def test_unparseable_verdict_is_retried_then_counted_as_error() -> None:
    j, fake = _judge(["blah", '{"score": 5, "reasoning": "ok", "failure_category": "none"}'])
    try:
        s = asyncio.run(j.score(CASE, "The answer is 4."))
        assert s.value == 1.0 and s.passed and s.category is None and len(fake.calls) == 2
    finally:
        unregister_fake("fake/judge")
    j, fake = _judge(["nope", "still nope", "no"])
    try:
        s = asyncio.run(j.score(CASE, "The answer is 4."))
        assert s.value is None and s.passed is None and "unparseable" in (s.error or "")
    finally:
        unregister_fake("fake/judge")
