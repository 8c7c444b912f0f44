"""reflexopt compare with fakes of known quality: the recommendation must be right."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import names_labels, write_jsonl

from reflexopt.compare import ModelRow, compare, recommend
from reflexopt.config import Budget, CompareConfig, DataSpec, ModelSpec
from reflexopt.models import FunctionModel, register_fake, unregister_fake
from reflexopt.recommend import Constraints


def labeller(accuracy: int, *, needs_spec: bool = False):  # type: ignore[no-untyped-def]
    def reply(messages: list[dict[str, str]]) -> str:
        text = " ".join(m["content"] for m in messages)
        item = messages[-1]["content"]
        if needs_spec and not names_labels(text):
            return "hmm"
        right = "positive" if "good" in item else "negative"
        h = int(hashlib.md5(item.encode()).hexdigest(), 16) % 100
        return right if h < accuracy else ("negative" if right == "positive" else "positive")

    return reply


@pytest.fixture
def setup(tmp_path: Path) -> Any:
    rows = [{"input": f"{'good' if i % 2 else 'bad'} device {i}", "ideal": "positive" if i % 2 else "negative"}
            for i in range(150)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    prompt = tmp_path / "p.md"
    prompt.write_text("Classify.\n")
    names = {"fake/strong": (92, 1e-4), "fake/cheap": (90, 1e-6), "fake/weak": (45, 1e-8)}
    for name, (acc, price) in names.items():
        register_fake(name, FunctionModel(labeller(acc), cost_per_token=price))
    register_fake("fake/broken", FunctionModel(lambda m: ValueError("down")))
    yield data, prompt
    for name in [*names, "fake/broken"]:
        unregister_fake(name)


def test_recommends_the_cheapest_model_as_good_as_the_best(setup: Any) -> None:
    data, prompt = setup
    cfg = CompareConfig(data=DataSpec(path=str(data)), prompt_path=str(prompt), tune=False,
                        models=(ModelSpec(id="fake/strong"), ModelSpec(id="fake/cheap"), ModelSpec(id="fake/weak"),
                                ModelSpec(id="fake/broken")))
    res = compare(cfg)
    rows = {r.model: r for r in res.rows}
    assert res.recommendation == "fake/cheap", (res.reason, [(r.model, r.tuned, r.cost_per_1k, r.error)
                                                            for r in res.rows])
    assert "as good as the best" in res.reason and "TOST" in res.reason and "fake/strong" in res.reason
    assert rows["fake/strong"].tuned > rows["fake/weak"].tuned  # type: ignore[operator]
    assert rows["fake/cheap"].cost_per_1k < rows["fake/strong"].cost_per_1k  # type: ignore[operator]
    assert rows["fake/broken"].error and "down" in rows["fake/broken"].error  # one failure loses nothing else
    assert rows["fake/cheap"].cost_per_success > rows["fake/cheap"].cost_per_1k / 1000  # type: ignore[operator]
    from reflexopt.store import runs_root

    saved = json.loads((runs_root() / res.compare_id / "compare.json").read_text())
    assert saved["recommendation"] == "fake/cheap" and len(saved["rows"]) == 4


def test_target_picks_cheapest_model_meeting_it() -> None:
    a = ModelRow("a", tuned=0.95, tuned_ci95=(0.9, 1.0), cost_per_1k=10.0, scores={str(i): 1.0 for i in range(40)})
    b = ModelRow("b", tuned=0.80, tuned_ci95=(0.7, 0.9), cost_per_1k=1.0,
                 scores={str(i): float(i % 5 != 0) for i in range(40)})
    c = ModelRow("c", tuned=0.50, tuned_ci95=(0.4, 0.6), cost_per_1k=0.1,
                 scores={str(i): float(i % 2) for i in range(40)})
    assert recommend([a, b, c], None)[0] == "a"  # b and c are significantly worse than a
    assert recommend([a, b, c], 0.75)[0] == "b"
    assert recommend([a, b, c], 0.99)[0] == "a"  # nobody meets it: fall back to the best and its equals
    assert recommend([ModelRow("x", error="boom")], None)[0] is None


def test_a_difference_that_is_not_significant_is_not_called_equivalence() -> None:
    """compare called a model "statistically indistinguishable" from the best when p >= 0.05 on a small test
    split, and recommended it for being cheaper: no evidence of equivalence. Now a cheaper model needs a TOST
    within the margin (Holm-corrected over the models compared)."""
    n = 12  # a small test split: 0.92 against 0.75 is not significant, and far from shown equivalent
    best = ModelRow("big", tuned=0.92, tuned_ci95=(0.8, 1.0), cost_per_1k=10.0,
                    scores={str(i): float(i != 0) for i in range(n)})
    cheap = ModelRow("small", tuned=0.75, tuned_ci95=(0.5, 0.9), cost_per_1k=1.0,
                     scores={str(i): float(i not in (0, 3, 7)) for i in range(n)})
    choice, reason = recommend([best, cheap], None)
    assert choice == "big" and "no significant difference found, which is not equivalence" in reason
    # many cases, a difference well inside the margin: shown equivalent, the cheaper one is recommended
    n = 400
    best = ModelRow("big", tuned=0.9, tuned_ci95=(0.87, 0.93), cost_per_1k=10.0,
                    scores={str(i): float(i % 10 != 0) for i in range(n)})
    cheap = ModelRow("small", tuned=0.895, tuned_ci95=(0.86, 0.92), cost_per_1k=1.0,
                     scores={str(i): float(i % 10 != 0 and i != 401 - 2) for i in range(n)})
    odd = ModelRow("odd", tuned=0.5, tuned_ci95=(0.45, 0.55), cost_per_1k=0.5,
                   scores={str(i): float(i % 2) for i in range(n)})
    choice, reason = recommend([best, cheap, odd], None, margin=0.05)
    assert choice == "small" and "within 0.05" in reason and "Holm-corrected over 2" in reason
    assert recommend([best, cheap, odd], None, margin=0.0)[0] == "big"  # no margin: nothing is equivalent


def test_tuned_compare_with_transfer(setup: Any) -> None:
    data, prompt = setup
    register_fake("fake/picky", FunctionModel(labeller(90, needs_spec=True), cost_per_token=1e-6))
    try:
        cfg = CompareConfig(data=DataSpec(path=str(data)), prompt_path=str(prompt), transfer=True,
                            models=(ModelSpec(id="fake/picky"), ModelSpec(id="fake/weak")),
                            budget=Budget(max_trials=6, patience=6), parallel=2)
        res = compare(cfg)
        rows = {r.model: r for r in res.rows}
        assert rows["fake/picky"].baseline == 0.0 and rows["fake/picky"].tuned > 0.8  # type: ignore[operator]
        assert rows["fake/picky"].significant_gain and rows["fake/picky"].run_id
        assert res.transfer is not None and set(res.transfer) == {"fake/picky", "fake/weak"}
        assert res.transfer["fake/picky"]["fake/picky"] == rows["fake/picky"].tuned
        assert res.transfer["fake/weak"]["fake/picky"] is not None
        assert res.recommendation == "fake/picky"
    finally:
        unregister_fake("fake/picky")


def test_a_price_given_as_a_model_setting_costs_the_calls_and_the_comparison(tmp_path: Path,
                                                                            openai_server: Any) -> None:
    """A self-hosted model litellm has no price for printed "price unknown" and the recommendation could say
    nothing about money. `-m ID@price_in=..,price_out=..` (USD per million tokens) prices it, and says so."""
    from conftest import label_model, label_rows, write_jsonl

    from reflexopt.compare import compare
    from reflexopt.config import compare_config

    openai_server.responder = lambda req: label_model(req["messages"])
    data = write_jsonl(tmp_path / "d.jsonl", label_rows(30))
    (tmp_path / "p.md").write_text("Label: {input}\n")
    cfg = compare_config(data, tmp_path / "p.md", ["openai/selfhosted@price_in=200,price_out=600", "openai/other"],
                         api_base=openai_server.url, metric="contains", tune=False)
    res = compare(cfg)
    rows = {r.model: r for r in res.rows}
    priced = next(r for m, r in rows.items() if m.startswith("openai/selfhosted"))
    assert priced.price_source == "model setting" and rows["openai/other"].price_source == "unknown"
    assert rows["openai/other"].cost_per_1k is None
    # 10 prompt + 5 completion tokens per call (the fake's usage): (10 * 200 + 5 * 600) / 1e6 USD, per 1,000
    assert priced.cost_per_1k == pytest.approx(1000 * (10 * 200 + 5 * 600) / 1e6)


def test_the_recommendation_honours_constraints_and_says_why_each_model_was_ruled_out() -> None:
    n = 40
    fast_cheap = ModelRow("small", tuned=0.70, tuned_ci95=(0.6, 0.8), cost_per_1k=0.1, latency_p95_s=0.4,
                          scores={str(i): float(i % 10 < 7) for i in range(n)})
    slow_best = ModelRow("big", tuned=0.95, tuned_ci95=(0.9, 1.0), cost_per_1k=2.0, latency_p95_s=3.1,
                         scores={str(i): float(i % 20 != 0) for i in range(n)})
    mid = ModelRow("mid", tuned=0.85, tuned_ci95=(0.8, 0.9), cost_per_1k=0.8, latency_p95_s=1.2,
                   scores={str(i): float(i % 20 not in (0, 1, 2)) for i in range(n)})
    rows = [fast_cheap, slow_best, mid]
    assert recommend(rows, None)[0] == "big"
    choice, reason = recommend(rows, None, constraints=Constraints(max_p95_s=2.0, min_score=0.8))
    assert choice == "mid"
    assert "big: latency p95 3.10 s > --max-p95 2 s" in reason
    assert "small: tuned score 0.700 < --min-score 0.8" in reason
    choice, reason = recommend(rows, None, constraints=Constraints(max_cost_per_1k=0.05))
    assert choice is None and reason.startswith("no model meets the constraints")
    assert reason.count("per 1,000 requests > --max-cost-per-1k") == 3
    from reflexopt.config import parse_seconds

    assert parse_seconds("2s") == 2.0 and parse_seconds("1500ms") == 1.5 and parse_seconds("0.5") == 0.5


def test_the_load_test_reports_what_a_rate_limited_server_saw(tmp_path: Path, openai_server: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`compare --load 1,8`: p95, throughput, errors and 429s per concurrency, from real calls (no cache), and
    the counts match the server's own."""
    import asyncio
    import json as _json
    import subprocess
    import sys
    import time

    from conftest import label_model, label_rows, write_jsonl

    from reflexopt.config import ModelSpec
    from reflexopt.data import load_dataset
    from reflexopt.evaluate import load_test
    from reflexopt.prompt import load_prompt

    def slow(req: dict[str, Any]) -> str:
        time.sleep(0.05)
        return label_model(req["messages"])

    openai_server.responder = slow
    openai_server.max_in_flight = 3
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-000000000000")
    data = write_jsonl(tmp_path / "d.jsonl", label_rows(12))
    (tmp_path / "p.md").write_text("Label: {input}\n")
    levels = asyncio.run(load_test(ModelSpec(id="openai/x", api_base=openai_server.url), load_prompt(tmp_path / "p.md"),
                                   load_dataset(data), [1, 8], 24))
    assert [x.requests for x in levels] == [24, 24]
    assert sum(x.http_requests for x in levels) == len(openai_server.requests)  # retries counted, cache bypassed
    assert sum(x.rate_limited for x in levels) == openai_server.rejected > 0
    assert levels[0].rate_limited == 0 and levels[1].rate_limited > 0  # only concurrency beyond the limit is refused
    assert all(x.p95_s is not None and x.p95_s >= x.p50_s >= 0.05 for x in levels)  # type: ignore[operator]
    # through the command: the table and compare.json carry the load test
    r = subprocess.run([sys.executable, "-m", "reflexopt", "compare", str(data), str(tmp_path / "p.md"), "-m",
                        "openai/x", "--api-base", openai_server.url, "--metric", "contains", "--no-tune", "--load",
                        "1,4", "--load-calls", "8", "--json"], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "REFLEXOPT_HOME": str(tmp_path / "h")})
    assert r.returncode == 0, r.stderr
    row = _json.loads(r.stdout)["rows"][0]
    assert [x["concurrency"] for x in row["load"]] == [1, 4] and all(x["requests"] == 8 for x in row["load"])


def test_the_best_models_score_is_re_estimated_for_the_winners_curse() -> None:
    """Two models that are truly equal: the better-looking one is picked on the same cases it is scored on, so
    its score overstates what picking this way gives. Picked on half the cases and scored on the other half, the
    estimate falls back towards the truth, and the pick is unstable."""
    import random

    from reflexopt.recommend import selection_adjusted

    rng = random.Random(5)
    n = 60
    a = {str(i): float(rng.random() < 0.6) for i in range(n)}
    b = {str(i): float(rng.random() < 0.6) for i in range(n)}
    rows = [ModelRow(m, tuned=sum(s.values()) / n, scores=s) for m, s in (("a", a), ("b", b))]
    best = max(rows, key=lambda r: r.tuned or 0.0)
    sel = selection_adjusted(rows, splits=400)
    assert sel is not None and sel["best"] == best.model and sel["cases"] == n
    assert sel["adjusted"] < sel["best_score"]  # the winner's curse, removed
    assert 0.2 < sel["pick_is_best"] < 0.95  # equal models: the pick changes with the half it is made on
    # one model far ahead: always picked, and its estimate is close to its score
    c = {str(i): float(i % 10 != 0) for i in range(n)}
    sel = selection_adjusted([*rows, ModelRow("c", tuned=0.9, scores=c)], splits=200)
    assert sel is not None and sel["best"] == "c" and sel["pick_is_best"] == 1.0
    assert sel["adjusted"] == pytest.approx(0.9, abs=0.05)
    assert selection_adjusted(rows[:1]) is None


def test_compare_says_when_no_model_beats_answering_the_most_common_label(setup: Any, tmp_path: Path) -> None:
    """"Is the small model bad, or was the prompt bad?" On an imbalanced set, a model that cannot tell the cases
    apart scores below a prompt that answers the most common label to every case. compare scores that constant
    answer on its test split (no model call) and says so when no model is above it; when one is, it only shows
    the bar."""
    data, prompt = setup
    res = compare(CompareConfig(data=DataSpec(path=str(data)), prompt_path=str(prompt), tune=False,
                                models=(ModelSpec(id="fake/strong"), ModelSpec(id="fake/weak"))))
    assert res.constant is not None and res.constant["score"] == pytest.approx(0.5, abs=0.05)
    assert "constant answer" not in res.reason  # fake/strong (about 0.9) is well above it

    rows = [{"input": f"{'good' if i % 4 else 'bad'} device {i}", "ideal": "positive" if i % 4 else "negative"}
            for i in range(160)]
    skewed = write_jsonl(tmp_path / "skewed.jsonl", rows)
    res = compare(CompareConfig(data=DataSpec(path=str(skewed)), prompt_path=str(prompt), tune=False,
                                models=(ModelSpec(id="fake/weak"),)))
    assert res.constant is not None and res.constant["label"] == "positive"
    assert res.constant["score"] == pytest.approx(0.75, abs=0.05) and res.rows[0].tuned < res.constant["score"]
    assert "No model scores above the constant answer (answering 'positive' to every case scores" in res.reason
    from reflexopt.report import compare_report
    from reflexopt.store import runs_root

    assert "constant answer: answering &#x27;positive&#x27;" in compare_report(runs_root() / res.compare_id)


def test_compare_says_when_a_models_score_is_the_judge_passing_copies_of_the_input(fakes: Any,
                                                                                    tmp_path: Path) -> None:
    """One model repeats the sentence it was given, the other rewrites it; a judge that grades meaning only passes
    both (its rubric lets it grade copies). The table, its JSON and the report say which model's score is copies
    of the input."""
    from reflexopt.cli.render import compare_table
    from reflexopt.config import ScorerSpec
    from reflexopt.report import compare_report
    from reflexopt.store import runs_root

    rows = [{"input": f"The doctor {i} thanked the tourist.", "ideal": f"The tourist was thanked by the doctor {i}."}
            for i in range(30)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    prompt = tmp_path / "p.md"
    prompt.write_text("Rewrite the sentence in the passive voice.\n")

    def judge(messages: list[dict[str, str]]) -> str:
        answer = messages[-1]["content"].split("<response>")[-1].split("</response>")[0]
        return json.dumps({"reasoning": "same meaning", "score": 5 if "thanked" in answer else 1,
                           "failure_category": "none"})

    def passive(messages: list[dict[str, str]]) -> str:
        doctor = messages[-1]["content"].split("The ", 1)[-1].split(" thanked")[0]
        return f"The tourist was thanked by the {doctor}."

    fakes("fake/copier", lambda m: m[-1]["content"].split("\n")[-1])
    fakes("fake/rewriter", passive)
    fakes("fake/meaning-judge", judge)
    rubric = tmp_path / "copies_judged.md"  # the judge grades copies too (by default they fail unjudged)
    rubric.write_text("---\nfail_copies: false\n---\nIs the response correct against the reference? 1 to 5.\n")
    res = compare(CompareConfig(data=DataSpec(path=str(data)), prompt_path=str(prompt), tune=False,
                                scorer=ScorerSpec(judge=ModelSpec(id="fake/meaning-judge"), rubric=str(rubric)),
                                models=(ModelSpec(id="fake/copier"), ModelSpec(id="fake/rewriter"))))
    by = {r.model: r for r in res.rows}
    n = res.n_test
    assert by["fake/copier"].tuned == by["fake/rewriter"].tuned == 1.0  # the judge cannot tell them apart
    assert by["fake/copier"].echo == {"echoes": n, "of": n, "passed": n} and by["fake/rewriter"].echo is None
    assert res.to_json()["rows"][0]["echo"]["passed"] == n
    assert res.recommendation == "fake/copier"  # as good on the judge's score and cheaper: the reason warns
    assert res.reason.endswith(f"Check before trusting it: its tuned prompt repeats the input unchanged on {n} of {n} "
                               f"cases whose reference changes it (all {n} passed by the scorer), so its score may "
                               "be the scorer's, not the task's.")
    caption = str(compare_table(res.to_json()).caption)
    assert f"fake/copier: repeats the input unchanged on {n} of {n}" in caption
    assert "fake/rewriter: repeats" not in caption
    html = compare_report(runs_root() / res.compare_id)
    assert f"fake/copier: repeats the input unchanged on {n} of {n}" in html


def test_a_model_that_fails_on_hard_cases_scores_them_0_not_as_if_absent(setup: Any) -> None:
    """A compared model whose call fails (an error, no answer) where it would be wrong must not lead: its failures
    count 0 in its row and in the transfer matrix, as in an optimize run's verdict."""
    data, prompt = setup

    def dodgy(messages: list[dict[str, str]]) -> str | Exception:
        item = messages[-1]["content"]
        if int(hashlib.md5(item.encode()).hexdigest(), 16) % 100 >= 50:
            return ValueError("content filter")  # non-retryable: the case fails
        return "positive" if "good" in item else "negative"

    register_fake("fake/dodgy", FunctionModel(dodgy))
    try:
        cfg = CompareConfig(data=DataSpec(path=str(data)), prompt_path=str(prompt), tune=False, transfer=True,
                            models=(ModelSpec(id="fake/strong"), ModelSpec(id="fake/dodgy")))
        res = compare(cfg)
    finally:
        unregister_fake("fake/dodgy")
    rows = {r.model: r for r in res.rows}
    dodgy_row = rows["fake/dodgy"]
    assert dodgy_row.tuned is not None and 0.3 < dodgy_row.tuned < 0.7, dodgy_row.tuned
    assert len(dodgy_row.scores) == res.n_test  # every test case counts, the failed ones as 0
    assert dodgy_row.task_failures == sum(1 for v in dodgy_row.scores.values() if v == 0) > 0
    assert dodgy_row.pass_rate == dodgy_row.tuned and rows["fake/strong"].task_failures == 0
    from rich.console import Console

    from reflexopt.cli.render import compare_table

    con = Console(width=400, record=True)
    con.print(compare_table(res.to_json()))
    note = f"fake/dodgy: {dodgy_row.task_failures} of {res.n_test} test calls failed, counted as 0"
    assert note in con.export_text()
    from reflexopt.report import compare_report
    from reflexopt.store import runs_root

    assert note in compare_report(runs_root() / res.compare_id)  # the HTML report says it too
    assert rows["fake/strong"].tuned > dodgy_row.tuned  # type: ignore[operator]
    assert res.recommendation == "fake/strong", res.reason
    assert res.transfer is not None and res.transfer["fake/strong"]["fake/dodgy"] == dodgy_row.tuned


def test_a_balanced_comparison_tunes_every_model_on_the_balanced_split(tmp_path: Path) -> None:
    """`compare --balanced`: each model's tuning run splits as the comparison does (its test split is the
    comparison's), so they were tuned and compared on the same label-balanced cases."""
    from reflexopt.config import compare_config, run_config

    data = write_jsonl(tmp_path / "d.jsonl", [{"input": f"t{i}", "ideal": "a" if i % 4 else "b"} for i in range(40)])
    (tmp_path / "p.md").write_text("Say a or b. {input}\n")
    cfg = compare_config(data, tmp_path / "p.md", ["openai/x", "openai/y"], balanced=True)
    assert cfg.balanced and all(run_config(cfg, m).balanced for m in cfg.models)
    assert not run_config(compare_config(data, tmp_path / "p.md", ["openai/x"]), cfg.models[0]).balanced
