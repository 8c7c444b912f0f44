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
        assert s["n_cases"] == 10 and s["errors"] == 1 and s["n_scored"] == 10 and s["task_failures"] == 1
        # cases 0,1,2,4,5,7,9 right; 6 and 8 wrong; 3 failed (counted as 0, as in an optimize run: a prompt whose
        # call fails on a case must not score as if the case were not there; and counted as an error)
        assert s["score"] == 0.7 and s["pass_rate"] == 0.7
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


def test_the_verdicts_coverage_names_why_each_case_left_the_pair() -> None:
    """On test: a task failure counts 0 and stays in the pair; a judge failure and a call the budget refused
    (whether it left a result or none) leave it, each counted under its own reason."""
    from reflexopt.evaluate import CaseResult
    from reflexopt.verdict import paired_on_test

    def res(cid: str, score: float | None, *, output: str = "x", error: str | None = None,
            refused: bool = False) -> CaseResult:
        return CaseResult(cid, "in", output, "ideal", score, None if score is None else score >= 0.5, error=error,
                          budget_exhausted=refused)

    base = [res("a", 1.0), res("b", 0.0), res("c", 1.0), res("d", 1.0), res("e", 0.0)]
    best = [res("a", 1.0), res("b", None, output="", error="model call failed: boom"),
            res("c", None, error="judge error: unparseable"), res("d", None, output="", refused=True)]
    cmp, cov = paired_on_test(base, best, ["a", "b", "c", "d", "e"], seed=0)
    assert cov["paired"] == 2 and cmp.n == 2  # a, and b with the failure as 0
    assert cov["task_failed_scored_0"] == {"baseline": 0, "best": 1}
    assert cov["not_scored"] == {"baseline": 0, "best": 1}
    assert cov["refused_for_budget"] == {"baseline": 0, "best": 2}  # d refused, e never asked


def _results(scores: list[float | None], outputs: list[str] | None = None) -> list:  # type: ignore[type-arg]
    from reflexopt.evaluate import CaseResult

    return [CaseResult(case_id=str(i), input=f"item {i}", output=(outputs or [""] * len(scores))[i] or f"out {i}",
                       ideal="yes", score=s, passed=None if s is None else s >= 1.0) for i, s in enumerate(scores)]


def test_a_prompt_change_is_worse_only_when_the_drop_is_significant() -> None:
    from reflexopt.regression import compare_change, gate_reasons

    old = _results([1.0] * 20)
    dropped = compare_change(old, _results([0.0] * 12 + [1.0] * 8), old_prompt="old.md")
    assert dropped["verdict"] == "worse" and dropped["worse_cases"] == 12 and dropped["better_cases"] == 0
    assert dropped["old_score"] == 1.0 and dropped["new_score"] == 0.4 and dropped["ci95"][1] < 0
    assert len(dropped["worst"]) == 5 and dropped["worst"][0]["old_output"] == "out 0"
    (reason,) = gate_reasons(0.4, dropped, None)
    assert reason.startswith("significantly worse than old.md: 1.000 -> 0.400") and "12 cases worse" in reason
    # one case lower is a lower mean, not a regression a gate may fail on
    noise = compare_change(old, _results([0.0] + [1.0] * 19), old_prompt="old.md")
    assert noise["verdict"] == "no significant difference" and noise["delta"] == -0.05
    assert gate_reasons(0.95, noise, None) == []
    assert compare_change(_results([0.0] * 12 + [1.0] * 8), old, old_prompt="o")["verdict"] == "better"
    # a case unscored on one side is left out of the pair; the worst list is ordered by the drop
    mixed = compare_change(_results([1.0, 1.0, 0.5, None]), _results([0.5, 0.0, 0.5, 1.0]), old_prompt="o")
    assert mixed["paired"] == 3 and mixed["n"] == 4 and [w["case_id"] for w in mixed["worst"]] == ["1", "0"]
    assert gate_reasons(0.7, None, 0.8) == ["score 0.700 is below --fail-under 0.8"]
    assert gate_reasons(0.8, None, 0.8) == [] and gate_reasons(None, None, 0.1) != []
