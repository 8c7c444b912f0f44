from __future__ import annotations

from reflexopt.config import ModelSpec
from reflexopt.data import Case
from reflexopt.evaluate import evaluate
from reflexopt.judge import JudgeScorer, Rubric
from reflexopt.metrics import MetricScorer
from reflexopt.models import FunctionModel, get_client, register_fake, unregister_fake
from reflexopt.prompt import Prompt

CASES = [Case(id=str(i), input=f"item {i}", ideal="yes" if i % 2 else "no", line=i + 1) for i in range(10)]


def test_evaluate_scores_in_dataset_order_and_counts_failures() -> None:
    def reply(messages: list[dict[str, str]]) -> str | Exception:
        n = int(messages[-1]["content"].split()[-1])
        if n == 3:
            return ValueError("boom")  # a non-retryable failure of one case
        return "yes" if n % 2 else "no" if n < 6 else "yes"

    register_fake("fake/eval", FunctionModel(reply, delay_s=0.01))
    try:
        task = get_client(ModelSpec(id="fake/eval"), cache=False)
        rep = evaluate(CASES, Prompt("Answer yes or no."), task, MetricScorer("exact", CASES), concurrency=4)
        assert [r.case_id for r in rep.results] == [c.id for c in CASES]
        s = rep.summary()
        assert s["n_cases"] == 10 and s["errors"] == 1 and s["n_scored"] == 9
        # cases 0,1,2,4,5,7,9 right; 6 and 8 wrong; 3 failed (excluded from the mean, counted as an error)
        assert s["score"] == round(7 / 9, 4)
        assert s["model_calls"] == 10 and s["failure_categories"] == {"wrong answer": 2}
        assert "model call failed" in (rep.results[3].error or "")
    finally:
        unregister_fake("fake/eval")


def test_judge_errors_are_counted_not_scored() -> None:
    register_fake("fake/task", FunctionModel(lambda m: "an answer"))
    verdicts = iter(['{"score": 5, "reasoning": "good", "failure_category": "none"}'] + ["garbage"] * 3 +
                    ['{"score": 1, "reasoning": "bad", "failure_category": "wrong"}'])
    register_fake("fake/j", FunctionModel(lambda m: next(verdicts)))
    try:
        task = get_client(ModelSpec(id="fake/task"), cache=False)
        judge = JudgeScorer(get_client(ModelSpec(id="fake/j"), role="judge", cache=False), Rubric("r", "grade"))
        rep = evaluate(CASES[:3], Prompt("Answer."), task, judge, concurrency=1)
        s = rep.summary()
        assert s["n_scored"] == 2 and s["errors"] == 1 and s["score"] == 0.5
        assert s["model_calls"] == 3 + 5 and s["by_role"]["judge"]["model_calls"] == 5
    finally:
        unregister_fake("fake/task")
        unregister_fake("fake/j")
