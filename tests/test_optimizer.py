"""The optimize loop with fake models: gains, budgets, selection, noise, pruning, Pareto parents."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import names_labels, write_jsonl

from reflexopt.config import Budget, DataSpec, ModelSpec, OptimizeConfig, ScorerSpec
from reflexopt.optimizer import Optimizer, optimize
from reflexopt.pool import Candidate, State, pareto_parent
from reflexopt.prompt import Demo, Prompt

LABEL_SPEC = "exactly one of these labels"


def _h(text: str) -> int:
    return int(hashlib.md5(text.encode()).hexdigest(), 16) % 100


def label_task(accuracy_with_spec: int = 85, accuracy_without: int = 5):  # type: ignore[no-untyped-def]
    """A task model that is good only when the prompt states the label set (or shows demos)."""

    def reply(messages: list[dict[str, str]]) -> str:
        text = " ".join(m["content"] for m in messages)
        item = messages[-1]["content"]
        good = names_labels(text)
        right = "positive" if "good" in item else "negative"
        if _h(item) < (accuracy_with_spec if good else accuracy_without):
            return right
        return "It is a product review."

    return reply


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    rows = [{"input": f"{'good' if i % 2 else 'bad'} thing number {i}", "ideal": "positive" if i % 2 else "negative"}
            for i in range(90)]
    return write_jsonl(tmp_path / "d.jsonl", rows)


@pytest.fixture
def prompt_file(tmp_path: Path) -> Path:
    p = tmp_path / "p.md"
    p.write_text("Look at this.\n")
    return p


def config(dataset: Path, prompt: Path, **kw: Any) -> OptimizeConfig:
    budget = kw.pop("budget", Budget(max_trials=10, patience=6))
    return OptimizeConfig(data=DataSpec(path=str(dataset)), prompt_path=str(prompt),
                          model=ModelSpec(id="fake/task"), reasoning=ModelSpec(id="fake/reasoner"), budget=budget, **kw)


def test_garbage_reasoner_still_improves_significantly(dataset: Path, prompt_file: Path, fakes: Any,
                                                       tmp_path: Path) -> None:
    fakes("fake/task", label_task())
    reasoner = fakes("fake/reasoner", lambda m: "}}} not json <prompt></prompt> ###")
    out = tmp_path / "best.md"
    r = optimize(config(dataset, prompt_file, output=str(out)))
    assert r.best_val > r.baseline_val and r.best_test > r.baseline_test + 0.4
    assert r.significant and r.p_value < 0.05 and r.delta_ci95[0] > 0
    assert out.read_text() == r.best_prompt and names_labels(r.best_prompt)
    assert len(reasoner.calls) > 0  # the reasoner was asked, and its junk did not break the loop
    run = Path(r.run_dir)
    events = [json.loads(x)["event"] for x in (run / "events.jsonl").read_text().splitlines()]
    assert events[0] == "start" and events[-1] == "done" and "trial" in events
    cands = [json.loads(x) for x in (run / "candidates.jsonl").read_text().splitlines()]
    assert any(c["fallback"] for c in cands)  # unusable rewrites are recorded as fallbacks
    assert all((run / "candidates" / f"{c['id']}.md").exists() for c in cands)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_candidate"] == r.best_candidate and (run / "best.md").read_text() == r.best_prompt
    # the steps that made the returned prompt: a parent chain from the starting prompt to it
    steps, parent = summary["lineage"], {c["id"]: c["parent"] for c in cands}
    assert steps and steps[-1]["id"] == r.best_candidate and parent[steps[0]["id"]] == "baseline"
    assert all(parent[b["id"]] == a["id"] for a, b in zip(steps, steps[1:], strict=False))
    assert all(s["by_reasoning_model"] is False for s in steps)  # the junk rewrites fell back; none is on the way


def test_never_returns_a_regression(dataset: Path, prompt_file: Path, fakes: Any) -> None:
    # every change to the prompt makes this model worse
    def task(messages: list[dict[str, str]]) -> str:
        text = " ".join(m["content"] for m in messages)
        item = messages[-1]["content"]
        right = "positive" if "good" in item else "negative"
        changed = text.count("\n") > 2 or len(messages) > 2 or "Answer:" in text or messages[0]["role"] == "user"
        return right if _h(item) < (20 if changed else 70) else "hmm"

    fakes("fake/task", task)
    fakes("fake/reasoner", lambda m: "<prompt>Look at this very carefully and think.</prompt>")
    r = optimize(config(dataset, prompt_file, budget=Budget(max_trials=8, patience=8)))
    assert r.best_candidate == "baseline" and r.best_prompt == r.baseline_prompt
    assert r.best_val == r.baseline_val and r.best_test == r.baseline_test and not r.significant


@pytest.mark.parametrize("max_calls", [150, 400])
def test_max_calls_is_a_hard_limit(dataset: Path, prompt_file: Path, fakes: Any, max_calls: int) -> None:
    task = fakes("fake/task", label_task())
    reasoner = fakes("fake/reasoner", lambda m: "<prompt>Classify: positive or negative.</prompt>")
    r = optimize(config(dataset, prompt_file, concurrency=4,
                        budget=Budget(max_trials=50, patience=50, max_calls=max_calls)))
    paid = len(task.calls) + len(reasoner.calls)
    assert paid <= max_calls and r.model_calls == paid
    assert r.stop_reason == "budget"
    assert r.baseline_test == r.baseline_test  # the final test verdict is still delivered (reserve kept)
    # the search stops when what is left cannot score a candidate on all of val: no call goes on a candidate
    # that could never be accepted
    cands = [json.loads(x) for x in (Path(r.run_dir) / "candidates.jsonl").read_text().splitlines()]
    assert all(c["state"] != "incomplete" for c in cands)


def test_max_cost_is_a_hard_limit(dataset: Path, prompt_file: Path, fakes: Any) -> None:
    fakes("fake/task", label_task(), cost_per_token=0.0001)
    fakes("fake/reasoner", lambda m: "nothing")
    r = optimize(config(dataset, prompt_file, budget=Budget(max_trials=50, patience=50, max_cost=0.05)))
    assert r.cost_usd <= 0.05


def base_n(events: list[tuple[str, dict[str, Any]]]) -> int:
    """The most val cases any trial was scored on (all of val)."""
    return max((d["n_val"] for k, d in events if k == "trial"), default=0)


def test_judge_noise_blocks_gains_below_it(dataset: Path, prompt_file: Path, fakes: Any) -> None:
    fakes("fake/task", label_task(accuracy_with_spec=30, accuracy_without=15))  # a tiny real gain
    fakes("fake/reasoner", lambda m: "nothing")
    rng = random.Random(0)

    def noisy_judge(messages: list[dict[str, str]]) -> str:
        text = messages[-1]["content"]
        good = "<response>\npositive" in text or "<response>\nnegative" in text
        score = min(5, max(1, (4 if good else 2) + rng.choice([-2, -1, 0, 1, 2])))
        return json.dumps({"reasoning": "r", "score": score, "failure_category": "none" if score >= 4 else "wrong"})

    fakes("fake/judge", noisy_judge)
    opt = Optimizer(config(dataset, prompt_file, scorer=ScorerSpec(judge=ModelSpec(id="fake/judge")),
                           budget=Budget(max_trials=6, patience=6), pruning=False))  # every trial on all of val
    events: list[tuple[str, dict[str, Any]]] = []
    opt.on_event = lambda k, d: events.append((k, d))
    r = opt.run()
    base = next(d for k, d in events if k == "baseline")
    assert base["noise"] > 0.1 and base["min_gain"] > 0
    assert r.judge_noise == pytest.approx(base["noise"], abs=1e-4)
    # what the strategy's gate reads as the judge's noise is the noise measured here
    from types import SimpleNamespace

    from reflexopt.strategies.base import SearchContext

    ctx = SearchContext(SimpleNamespace(val=[None] * base_n(events)), None, None, base["min_gain"])  # type: ignore[arg-type]
    assert ctx.noise == pytest.approx(base["noise"], abs=1e-6)
    trials = [d for k, d in events if k == "trial" and d["val"] is not None and d["n_val"] == base_n(events)]
    blocked = [d for d in trials if r.baseline_val < d["val"] < r.baseline_val + base["min_gain"]]
    assert blocked and not any(d["accepted"] for d in blocked)  # a real but noise-sized gain was not taken
    # and the summary names what the bar held back above the returned prompt, with the score each needed
    above = [d for d in trials if round(d["val"], 4) > r.best_val and not d["accepted"]]  # best_val is rounded
    assert above and [k["val"] for k in r.held_back or []] == sorted(
        (round(d["val"], 4) for d in above), reverse=True)[:5]
    assert all(k["needed"] > k["val"] for k in r.held_back or [])


def test_a_steady_gain_under_the_judges_redraw_noise_is_accepted(dataset: Path, prompt_file: Path,
                                                                 fakes: Any) -> None:
    """A judge whose verdicts at temperature 0 follow the answer but whose redraws (temperature 0.7) are noise:
    its redraw noise sets a bar the real gain is under, yet every case the better prompt changed went up, so the
    per-case differences tell the gain from noise (stats.paired_gain_bar) and it is taken."""
    task = label_task(accuracy_with_spec=40, accuracy_without=15)
    fakes("fake/task", lambda m: "it is " + task(m))  # not the reference's words, which pass unjudged
    fakes("fake/reasoner", lambda m: "nothing")
    rng = random.Random(0)

    def judge(messages: list[dict[str, str]], params: dict[str, Any]) -> str:
        text = messages[-1]["content"]
        good = "<response>\nit is positive" in text or "<response>\nit is negative" in text
        score = rng.randint(1, 5) if params.get("temperature") else (4 if good else 2)
        return json.dumps({"reasoning": "r", "score": score, "failure_category": "none" if score >= 4 else "wrong"})

    fakes("fake/judge", judge)
    opt = Optimizer(config(dataset, prompt_file, scorer=ScorerSpec(judge=ModelSpec(id="fake/judge")),
                           budget=Budget(max_trials=6, patience=6), pruning=False))
    events: list[tuple[str, dict[str, Any]]] = []
    opt.on_event = lambda k, d: events.append((k, d))
    r = opt.run()
    base = next(d for k, d in events if k == "baseline")
    first = next(d for k, d in events if k == "trial" and d["accepted"])
    assert first["val"] - r.baseline_val < base["min_gain"]  # under the bar the redraw noise alone would set
    assert r.best_val > r.baseline_val and r.best_test > r.baseline_test


def test_pruning_cuts_calls_for_bad_candidates(dataset: Path, prompt_file: Path, fakes: Any) -> None:
    good = label_task()
    # rewrites by this reasoner ask for something nice: the task model then answers badly whatever else it sees
    fakes("fake/task", lambda m: "so nice" if "nice" in " ".join(x["content"] for x in m) else good(m))
    fakes("fake/reasoner", lambda m: "<prompt>Say something nice.</prompt>")
    r = optimize(config(dataset, prompt_file, budget=Budget(max_trials=14, patience=14)))
    cands = [json.loads(x) for x in (Path(r.run_dir) / "candidates.jsonl").read_text().splitlines()]
    pruned = [c for c in cands if c["state"] == "pruned"]
    assert r.pruned_trials == len(pruned) > 0
    n_val = max(c["n_val"] for c in cands)
    assert all(c["n_val"] < n_val for c in pruned)
    assert {c["pruned_by"] for c in pruned} <= {"gate", "worse than best"} and all(c["pruned_by"] for c in pruned)


def test_dry_run_estimate_makes_no_calls(dataset: Path, prompt_file: Path, fakes: Any) -> None:
    task = fakes("fake/task", label_task())
    fakes("fake/reasoner", lambda m: "no")
    opt = Optimizer(config(dataset, prompt_file, budget=Budget(max_trials=10, max_calls=500)))
    est = opt.estimate()
    assert 0 < est["calls_estimate"] <= 500 and est["cost_estimate_usd"] == 0.0
    assert est["n_train"] + est["n_val"] + est["n_test"] == 90
    assert task.calls == []


def test_pareto_parent_prefers_candidates_best_on_some_case() -> None:
    rng = random.Random(0)
    a = Candidate("a", Prompt("A"), state="complete", val={"1": 1, "2": 0, "3": 1})
    b = Candidate("b", Prompt("B"), state="complete", val={"1": 0, "2": 1, "3": 1})
    c = Candidate("c", Prompt("C"), state="complete", val={"1": 0, "2": 0, "3": 1})  # dominated
    d = Candidate("d", Prompt("D"), state="pruned", val={"1": 1, "2": 1})
    picks = {pareto_parent([a, b, c, d], rng).id for _ in range(50)}
    assert picks == {"a", "b"}


def test_the_steps_to_the_best_include_an_unaccepted_rewrite_it_was_built_on() -> None:
    """The returned prompt's lineage follows parent links, not the accepted path: an induced instruction that was
    never a new best, on which the accepted best was built, is a step by the reasoning model."""
    from reflexopt.pool import steps_text, steps_to

    def cand(cid: str, op: str, parent: str | None, v: float) -> Candidate:
        return Candidate(cid, Prompt(cid), op, parent, state="complete", val={"1": v})

    pool = [cand("baseline", "baseline", None, 0.2), cand("t1", "demos", "baseline", 0.4),
            cand("t2", "format", "t1", 0.5), cand("t3", "cue", "t2", 0.1), cand("t4", "induce", "t2", 0.6),
            cand("t5", "format", "t4", 0.7)]
    steps = steps_to(pool, "t5", ["baseline", "t2", "t5"])
    assert [(s["id"], s["operator"], s["accepted"], s["by_reasoning_model"]) for s in steps] == [
        ("t1", "demos", False, False), ("t2", "format", True, False), ("t4", "induce", False, True),
        ("t5", "format", True, False)]
    assert steps_text(steps) == ("demos → format ✓ → induce (reasoning model) → format ✓ · 1 of 4 by the "
                                 "reasoning model")
    mipro = steps_to([pool[0], cand("t0", "mipro", "baseline", 0.5)], "t0", ["baseline", "t0"])
    assert steps_text(mipro) == "mipro ✓"  # a DSPy compile is one step: no count of rewrites
    assert steps_to(pool, "baseline", ["baseline"]) == []


def test_diagnosis_parsing_is_defensive() -> None:
    from reflexopt.diagnose import parse_diagnosis

    good = parse_diagnosis('Sure: {"categories": [{"name": "verbose", "root_cause": "no format given", '
                           '"fix": "ask for the label only", "cases": 3}]}')
    assert [(c.name, c.cases) for c in good] == [("verbose", 3)]
    assert parse_diagnosis("no json here") == ()
    assert parse_diagnosis('{"categories": "none"}') == ()
    assert parse_diagnosis('{"categories": [{"name": "x"}]}') == ()  # no cause and no fix
    echoed = parse_diagnosis('{"categories": [{"name": "Failing cases", "root_cause": "the prompt fails to say '
                             'or says badly", "fix": ""}]}')
    assert echoed == ()


def test_two_runs_with_the_same_run_dir_name_never_share_a_study(dataset: Path, prompt_file: Path, fakes: Any,
                                                                   tmp_path: Path) -> None:
    """Two runs whose --run-dir folders have the same name, on one shared storage: the second searches on its
    own (it once loaded the first run's study, found its trials and stopped at once with the first's results)."""
    fakes("fake/task", label_task())
    fakes("fake/reasoner", lambda m: "no")
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    cfg = config(dataset, prompt_file, storage=storage, budget=Budget(max_trials=4, patience=10))
    first = optimize(cfg, run_dir=tmp_path / "a" / "run")
    second = optimize(cfg, run_dir=tmp_path / "b" / "run")
    assert first.trials == second.trials == 4
    events = [json.loads(x) for x in (tmp_path / "b" / "run" / "events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "trial" for e in events) == 4  # its own trials, run by itself
    studies = {json.loads((tmp_path / d / "run" / "events.jsonl").read_text().splitlines()[0])["study"]
               for d in ("a", "b")}
    assert len(studies) == 2



def test_a_gated_trial_says_why_it_stopped() -> None:
    import io

    from rich.console import Console

    from reflexopt.cli.render import LiveView

    buf = io.StringIO()
    view = LiveView(Console(file=buf, width=120, force_terminal=False))
    base = {"n": 3, "candidate": "t3", "operator": "cue", "val": 0.6, "n_val": 15, "accepted": False,
            "best_val": 0.5, "usage": {}, "parent": "t2"}
    view.on_event("trial", {**base, "state": "pruned", "pruned_by": "gate"})
    view.on_event("trial", {**base, "state": "pruned", "pruned_by": "worse than best"})
    lines = buf.getvalue().splitlines()
    assert "pruned: no gain over t2" in lines[0]
    assert lines[1].rstrip().endswith("pruned: significantly worse than the best · best 0.500")


def test_later_demos_trials_redraw_examples_in_the_parents_demo_shape(dataset: Path, prompt_file: Path,
                                                                      fakes: Any) -> None:
    from reflexopt.search import DEMO_KNOBS

    def shown(messages: list[dict[str, str]]) -> str:  # right only with demos; how often depends on which ones
        text = " ".join(m["content"] for m in messages)
        item = messages[-1]["content"]
        if text.count("thing number") < 2 or _h(text) < 30:
            return "It is a product review."
        return "positive" if "good" in item else "negative"

    fakes("fake/task", shown)
    fakes("fake/reasoner", lambda m: "no")  # unusable rewrites: the search lives on demos and structure
    r = optimize(config(dataset, prompt_file, budget=Budget(max_trials=30, patience=30)))
    cands = {c["id"]: c for c in map(json.loads, (Path(r.run_dir) / "candidates.jsonl").read_text().splitlines())}
    around = [c for c in cands.values() if c["operator"] == "demos" and c["params"].get("around")]
    assert around, "no demos trial kept its parent's demo shape"
    for c in around:
        node = cands[c["parent"]]
        while node["operator"] != "demos":  # the parent's demos came from its nearest demos ancestor
            node = cands[node["parent"]]
        assert all(c["params"][k] == node["params"][k] for k in DEMO_KNOBS if k != "demo_style")
        assert c["params"]["demo_seed"] != node["params"]["demo_seed"]


def test_after_patience_the_run_draws_other_demos_for_the_best_before_it_stops(dataset: Path, prompt_file: Path,
                                                                               fakes: Any) -> None:
    fakes("fake/task", lambda m: "It is a product review.")  # nothing ever gains: patience runs out
    fakes("fake/reasoner", lambda m: "no")
    r = optimize(config(dataset, prompt_file, budget=Budget(max_trials=60, patience=4)))
    assert r.stop_reason == "no accepted gain in 4 trials, then in 4 demo draws on the best"
    cands = sorted((json.loads(x) for x in (Path(r.run_dir) / "candidates.jsonl").read_text().splitlines()
                    if json.loads(x)["trial"] is not None), key=lambda c: c["trial"])
    tail = [c for c in cands if c["state"] != "duplicate"][-4:]
    assert [(c["operator"], c["parent"]) for c in tail] == [("demos", "baseline")] * 4
    assert len({c["key"] for c in tail}) == 4


def test_a_rerun_of_a_run_that_ended_on_its_budget_is_the_same_run_and_pays_nothing(
        dataset: Path, prompt_file: Path, fakes: Any) -> None:
    """A cached answer was free for the budget, so the same command run again on a warm cache searched further
    than the first run and paid for it (and could return another prompt): 'same seed, same run' held only on an
    empty cache. A cache answer the run had not asked for before now counts as a call made (never as paid)."""
    task = fakes("fake/task", label_task())
    fakes("fake/reasoner", lambda m: "<prompt>Label the text as positive or negative.</prompt>")
    cfg = config(dataset, prompt_file, budget=Budget(max_calls=150, patience=50))
    first = optimize(cfg)
    assert first.stop_reason == "budget" and first.model_calls <= 150
    served = len(task.calls)
    again = optimize(cfg)
    assert again.model_calls == 0 and len(task.calls) == served
    assert (again.trials, again.best_prompt, again.best_test) == (first.trials, first.best_prompt, first.best_test)
    assert again.cached_calls == first.model_calls  # every call of the first run, once, from the cache


def test_a_rerun_of_a_run_that_ended_on_its_cost_limit_is_the_same_run_and_pays_nothing(
        dataset: Path, prompt_file: Path, fakes: Any) -> None:
    """Cache answers cost nothing, so --max-cost did not count them: the same command run again on a warm cache
    searched further than the first run and paid for it. A cache answer the run had not asked for before now
    counts at the price it was paid when it was cached (never as paid)."""
    task = fakes("fake/task", label_task(), cost_per_token=0.0001)
    fakes("fake/reasoner", lambda m: "<prompt>Label the text as positive or negative.</prompt>")
    cfg = config(dataset, prompt_file, budget=Budget(max_trials=50, patience=50, max_cost=0.05))
    first = optimize(cfg)
    assert first.stop_reason == "budget" and 0 < first.cost_usd <= 0.05
    served = len(task.calls)
    again = optimize(cfg)
    assert again.model_calls == 0 and len(task.calls) == served and again.cost_usd == 0
    assert (again.trials, again.best_prompt, again.best_test) == (first.trials, first.best_prompt, first.best_test)


def test_the_verdict_counts_a_failed_task_call_as_a_failure_and_reports_coverage(dataset: Path, prompt_file: Path,
                                                                                   fakes: Any) -> None:
    """A case whose task call failed for one prompt dropped out of the verdict, so a prompt that broke the model
    on its hardest cases gained by it, and nothing said how many cases were compared."""
    from reflexopt.data import load_dataset, split

    good = label_task()
    test_inputs = {c.input_text for c in split(load_dataset(dataset), None, seed=0).test}

    def breaks_on_some(messages: list[dict[str, str]]) -> str:
        text = " ".join(m["content"] for m in messages)
        item = messages[-1]["content"]
        if names_labels(text) and any(t in item for t in test_inputs) and _h(item) >= 85:  # tuned prompt wrong
            raise ValueError("provider error: the model crashed")
        return str(good(messages))

    fakes("fake/task", breaks_on_some)
    fakes("fake/reasoner", lambda m: "nothing")
    r = optimize(config(dataset, prompt_file))
    assert r.best_candidate != "baseline"
    from reflexopt.store import RunStore

    tested = RunStore(Path(r.run_dir)).results(r.best_prompt, "test")
    failed = [x for x in tested.values() if x.score is None]
    assert failed and len(tested) == len(test_inputs)
    assert r.best_test == pytest.approx(sum(x.score or 0.0 for x in tested.values()) / len(test_inputs), abs=1e-4)
    cov = r.test_cases
    assert cov == {"n": len(test_inputs), "paired": len(test_inputs), "refused_for_budget": {"baseline": 0, "best": 0},
                   "task_failed_scored_0": {"baseline": 0, "best": len(failed)},
                   "not_scored": {"baseline": 0, "best": 0}}


def test_objective_cost_returns_the_cheapest_prompt_not_worse_on_val(dataset: Path, prompt_file: Path,
                                                                      fakes: Any) -> None:
    """The search kept the higher val score however small the gain and however many tokens it cost. With
    `--objective cost` the run returns the cheapest candidate that a one-sided paired test shows loses less than
    the margin (0.05) against the score-best on val; `--max-prompt-tokens` leaves out every candidate above the
    cap."""

    def reply(messages: list[dict[str, str]]) -> str:
        text = " ".join(m["content"] for m in messages)
        item = messages[-1]["content"]
        right = "positive" if "good" in item else "negative"
        demos = len(messages) > 2 or "Examples:" in text
        acc = (92 if demos else 86) if names_labels(text) else 5  # demos: a small gain for many more tokens
        return right if _h(item) < acc else "It is a product review."

    fakes("fake/task", reply)
    fakes("fake/reasoner", lambda m: "nothing")
    budget = Budget(max_trials=8, patience=8)
    by_score = optimize(config(dataset, prompt_file, budget=budget))
    by_cost = optimize(config(dataset, prompt_file, budget=budget, objective="cost"))
    pts = {p["id"]: p for p in by_cost.frontier or []}
    score_pick, cost_pick = pts[by_score.best_candidate], pts[by_cost.best_candidate]
    assert by_score.objective == "score" and by_cost.objective == "cost"
    assert by_cost.best_candidate != by_score.best_candidate  # the score-best carries the demos
    assert cost_pick["prompt_tokens"] < score_pick["prompt_tokens"] and cost_pick["not_worse"]
    assert by_cost.best_val >= by_cost.baseline_val and "non-inferiority test" in by_cost.chosen_by
    assert "within 0.05" in by_cost.chosen_by
    # a margin the user sets: with 0, only a prompt that scores at least the best on val may replace it
    strict = optimize(config(dataset, prompt_file, budget=budget, objective="cost", cost_margin=0.0))
    strict_pick = {p["id"]: p for p in strict.frontier or []}[strict.best_candidate]
    assert strict_pick["val"] >= score_pick["val"] and "within 0 of" in strict.chosen_by
    capped = optimize(config(dataset, prompt_file, budget=budget, max_prompt_tokens=int(cost_pick["prompt_tokens"])))
    assert {p["id"]: p for p in capped.frontier or []}[capped.best_candidate]["prompt_tokens"] <= \
        cost_pick["prompt_tokens"]


def test_objective_cost_scores_fewer_demo_variants_of_its_pick(dataset: Path, prompt_file: Path,
                                                               fakes: Any) -> None:
    """The cost pick could only be as cheap as the prompts the search happened to make. With `--objective cost`
    its variants with fewer demos are scored on val, and one that is not worse and cheaper is returned; one that
    is worse (too few demos) is stopped once the pruner sees it is, and is never returned."""

    def reply(messages: list[dict[str, str]]) -> str:
        item = messages[-1]["content"]
        right = "positive" if "good" in item else "negative"
        demos = " ".join(m["content"] for m in messages).count("thing number") - 1
        return right if _h(item) < (90 if demos >= 3 else 5) else "It is a product review."  # 3 demos needed

    fakes("fake/task", reply)
    fakes("fake/reasoner", lambda m: "nothing")
    # a budget the search would spend: the variant still gets the val scoring the search left for it
    r = optimize(config(dataset, prompt_file, budget=Budget(max_calls=330, max_trials=40, patience=40),
                        objective="cost"))
    assert r.stop_reason == "budget" and r.model_calls <= 330
    cands = {c["id"]: c for c in map(json.loads, (Path(r.run_dir) / "candidates.jsonl").read_text().splitlines())}
    trims = {i: c for i, c in cands.items() if c["operator"] == "trim"}
    assert trims, "the demo pick's cheaper variants were scored"
    parent = next(iter(trims.values()))["parent"]
    pts = {p["id"]: p for p in r.frontier or []}
    assert r.best_candidate in trims and pts[r.best_candidate]["prompt_tokens"] < pts[parent]["prompt_tokens"]
    # a variant that is worse (too few demos left) is stopped early, never returned
    worse = [c for c in trims.values() if c["params"]["demos_kept"] < 3]
    assert worse and all(c["state"] == "pruned" and c["n_val"] == 15 for c in worse)
    assert not any(i in pts for i in trims if trims[i]["state"] == "pruned")


def test_the_same_rewrite_asked_again_is_a_new_draw_not_the_cached_reply(dataset: Path, prompt_file: Path,
                                                                         fakes: Any) -> None:
    """An LLM rewrite of one parent asked a second time was the same request, answered from the cache with the
    same unusable reply. Now each repeat is another draw, at temperature 0.7."""
    fakes("fake/task", lambda m: "?")  # nothing ever improves: the starting prompt stays every trial's parent
    asked: list[tuple[str, float]] = []

    def reasoner(messages: list[dict[str, str]], params: dict[str, Any]) -> str:
        text = messages[-1]["content"]
        if text.startswith("You are improving a prompt"):  # a rewrite (not a diagnosis)
            asked.append((text, float(params.get("temperature") or 0.0)))
        return f"<prompt>Look at this, take {len(asked)}.</prompt>"  # usable, and no better

    fakes("fake/reasoner", reasoner)
    # the five rewrites take turns within their family: the sixth ask of the family repeats one
    optimize(config(dataset, prompt_file, budget=Budget(max_trials=60, patience=60)))
    seen: dict[str, list[float]] = {}
    for text, temperature in asked:
        seen.setdefault(text, []).append(temperature)
    repeats = {t: temps for t, temps in seen.items() if len(temps) > 1}
    assert repeats, "some rewrite was asked of the same parent twice"
    for temps in repeats.values():
        assert temps[0] == 0.0 and all(t == 0.7 for t in temps[1:])


def test_the_best_candidate_wins_even_when_another_process_scored_it() -> None:
    """A candidate a worker scored has no token counts in the coordinator's run folder. Under --objective score
    with no prompt-token cap it must still be returned as the best (it lost to a worse candidate whose counts
    were local: the distributed test caught the verdict returning t1 while the selection said t6)."""
    from reflexopt.evaluate import CaseResult
    from reflexopt.pool import State
    from reflexopt.verdict import choose

    ids = [str(i) for i in range(10)]
    base = Candidate("baseline", Prompt("a")).scored({i: 0.0 for i in ids}, State.COMPLETE)
    local = Candidate("t1", Prompt("b")).scored({i: 0.5 for i in ids}, State.COMPLETE)
    remote = Candidate("t6", Prompt("c")).scored({i: 1.0 for i in ids}, State.COMPLETE)
    rows = {i: CaseResult(case_id=i, input="x", output="y", ideal="y", score=1.0, passed=True, prompt_tokens=9,
                          completion_tokens=1) for i in ids}

    def results(c: Candidate) -> dict[str, CaseResult]:
        return {} if c.id == "t6" else rows  # the worker's results are in its own folder

    best, _, _ = choose(remote, base, [base, local, remote], len(ids), objective="score", max_prompt_tokens=None,
                        results=results, price=None)
    assert best.id == "t6"
    capped, _, _ = choose(remote, base, [base, local, remote], len(ids), objective="score", max_prompt_tokens=50,
                          results=results, price=None)
    assert capped.id == "t1"  # under a cap, a prompt whose tokens are unknown cannot be shown within it


def test_a_second_prompt_that_answers_one_label_whatever_the_case_is_stopped_at_the_first_check(
        tmp_path: Path, prompt_file: Path, fakes: Any) -> None:
    """Collapse: with demos the fake model answers "positive" to everything (0.6 on a 60/40 val split);
    stating the labels makes it tell the cases apart, 35% right, or 85% when told to give the label only. The
    first constant answer is scored in full (it is the bar: a prompt that varies its answers must beat it) and
    marked; every later one is stopped after the first 15 cases, and the best prompt that varies is what the
    search builds on and returns."""
    rows = [{"input": f"{'good' if i % 5 < 3 else 'bad'} thing number {i}",
             "ideal": "positive" if i % 5 < 3 else "negative"} for i in range(100)]
    dataset = write_jsonl(tmp_path / "imbalanced.jsonl", rows)

    def reply(messages: list[dict[str, str]]) -> str:
        text = " ".join(m["content"] for m in messages)
        item = messages[-1]["content"]
        if text.count("thing number") > 1:  # demos shown (as turns or inline)
            return "positive"
        if names_labels(text):
            right = "positive" if "good" in item else "negative"
            return right if _h(item) < (85 if "label only" in text else 35) else \
                {"positive": "negative", "negative": "positive"}[right]
        return "It is a product review."

    fakes("fake/task", reply)
    fakes("fake/reasoner", lambda m: "no")
    events: list[tuple[str, dict[str, Any]]] = []
    r = optimize(config(dataset, prompt_file, budget=Budget(max_trials=16, patience=16)),
                 on_event=lambda k, d: events.append((k, d)))
    cands = [json.loads(x) for x in (Path(r.run_dir) / "candidates.jsonl").read_text().splitlines()]
    cands = [c for c in cands if c["state"] != "running"]
    collapsed = [c for c in cands if c["params"].get("collapsed")]
    assert all(c["params"]["collapsed"]["label"] == "positive" for c in collapsed)
    full = [c for c in collapsed if c["state"] == "complete"]
    stopped = [c for c in collapsed if c["state"] == "pruned"]
    assert len(full) == 1 and full[0]["n_val"] == 30 and full[0]["val_mean"] == pytest.approx(0.6)
    assert len(stopped) >= 2 and all(c["pruned_by"] == "collapsed" and c["n_val"] == 15 for c in stopped)
    assert all(c["trial"] < stopped[0]["trial"] for c in full)
    best = next(c for c in cands if c["id"] == r.best_candidate)
    assert not best["params"].get("collapsed") and best["val_mean"] > 0.6
    lines = [d for k, d in events if k == "trial" and d.get("collapsed")]
    assert len(lines) == len(collapsed)


def test_below_a_constant_answer_the_search_tries_one_demo_set_with_the_labels_train_shares(
        tmp_path: Path, prompt_file: Path, dataset: Path, fakes: Any) -> None:
    """75% of the cases are positive, and the fake model cannot tell them apart: with demos it answers the label
    most of them show (the minority at a tie), so the first demo set (every label alike) scores the minority's
    share. The trial after it shows each label as often as train has it (6 of 8 positive), which scores the
    constant answer's share and is returned: a varied prompt tied with it later does not take its place. On a set
    where a candidate already beats the constant answer, no such trial is made."""
    rows = [{"input": f"thing number {i}", "ideal": "negative" if i % 4 == 0 else "positive"} for i in range(100)]
    skewed = write_jsonl(tmp_path / "skewed.jsonl", rows)

    def reply(messages: list[dict[str, str]]) -> str:
        shown = [m["content"] for m in messages if m["role"] == "assistant"]
        if shown:
            return "positive" if shown.count("positive") > shown.count("negative") else "negative"
        if names_labels(" ".join(m["content"] for m in messages)):
            return "positive" if _h(messages[-1]["content"]) < 50 else "negative"  # varied, no skill
        return "It is a product review."

    fakes("fake/task", reply)
    fakes("fake/reasoner", lambda m: "no")
    r = optimize(config(skewed, prompt_file, budget=Budget(max_trials=12, patience=12)))
    cands = [json.loads(x) for x in (Path(r.run_dir) / "candidates.jsonl").read_text().splitlines()]
    cands = [c for c in cands if c["state"] != "running" and c["id"] != "baseline"]
    demos = [c for c in cands if c["operator"] == "demos"]
    prior = [c for c in demos if c["params"].get("demo_pick") == "prior" and not c["params"].get("around")]
    assert demos[0]["params"]["demo_pick"] == "balanced" and demos[0]["val_mean"] < 0.3  # the minority's share
    assert len(prior) == 1 and prior[0]["trial"] == demos[0]["trial"] + 1 and prior[0]["params"]["n_demos"] == 8
    assert prior[0]["val_mean"] > 0.7 and r.best_candidate == prior[0]["id"]

    fakes("fake/task", label_task())  # demos name both labels: 85% right, above the constant answer's 0.5
    r = optimize(config(dataset, prompt_file, budget=Budget(max_trials=12, patience=12)))
    cands = [json.loads(x) for x in (Path(r.run_dir) / "candidates.jsonl").read_text().splitlines()]
    assert r.best_val > 0.5 and not any(c["params"].get("demo_pick") == "prior" for c in cands)


def test_cheaper_variants_keep_every_answer_shown_once() -> None:
    from reflexopt.prompt import Demo
    from reflexopt.verdict import cheaper_variants

    labels = ["pos", "pos", "neg", "neg", "pos", "neu"]
    pick = Candidate("t3", Prompt(text="Classify.", demos=tuple(Demo(f"item {i}", y) for i, y in enumerate(labels))))
    got = {v.id: [d.input for d in v.prompt.demos] for v in cheaper_variants(pick)}
    assert got == {"t3.d5": [f"item {i}" for i in range(5)], "t3.d3u": ["item 0", "item 2", "item 5"],
                   "t3.d3": ["item 0", "item 1", "item 2"], "t3.d0": []}


def test_a_cheaper_prompt_that_scores_higher_on_val_is_not_worse_however_many_answers_it_changes() -> None:
    """A cheaper variant 0.13 higher on val but flipping many answers both ways cannot be shown non-inferior by
    the paired test (its spread is too large); scoring higher on val, it is still not worse there."""
    from reflexopt.evaluate import CaseResult
    from reflexopt.verdict import choose

    ids = [f"c{i}" for i in range(60)]
    top_val = {k: float(i % 2) for i, k in enumerate(ids)}  # 0.5
    flips = {k: 1.0 - v for k, v in top_val.items()}  # every answer flipped...
    for k in ids[:8]:
        flips[k] = 1.0  # ...and 8 more right: 0.633
    demos = tuple(Demo(f"d{i}", "x") for i in range(4))
    base = Candidate("baseline", Prompt("Go."), val={k: 0.0 for k in ids}, state=State.COMPLETE)
    top = Candidate("t2", Prompt("Go.", demos=demos), val=top_val, state=State.COMPLETE, trial=2)
    cheap = Candidate("t2.d3", Prompt("Go.", demos=demos[:3]), "trim", "t2", val=flips, state=State.COMPLETE)

    def results(c: Candidate) -> dict[str, CaseResult]:
        n = 100 + 50 * len(c.prompt.demos)
        return {k: CaseResult(case_id=k, input="", output="", ideal=None, score=v, passed=None, prompt_tokens=n,
                              completion_tokens=1) for k, v in c.val.items()}

    chosen, frontier, _ = choose(top, base, [base, top, cheap], 60, objective="cost", max_prompt_tokens=None,
                                 results=results, price=None)
    assert chosen.id == "t2.d3" and {p.id: p.not_worse for p in frontier}["t2.d3"]


def test_of_candidates_tied_on_val_the_cheaper_is_returned_but_never_a_one_label_one_for_a_varied_best() -> None:
    """Under the default objective, a later candidate with the same val score as the best and fewer tokens per
    request is returned in its place (nothing on val tells them apart; it serves the same score for less), and
    the summary says so. A tie that answers one label does not replace a best that varies its answers, and the
    starting prompt keeps its place when nothing beat it."""
    from reflexopt.evaluate import CaseResult
    from reflexopt.verdict import choose

    ids = [f"c{i}" for i in range(40)]
    val = {k: float(i % 4 != 0) for i, k in enumerate(ids)}  # 0.75
    demos = tuple(Demo(f"d{i}", "x") for i in range(6))
    base = Candidate("baseline", Prompt("Go."), val={k: 0.0 for k in ids}, state=State.COMPLETE)
    top = Candidate("t1", Prompt("Go.", demos=demos), val=val, state=State.COMPLETE, trial=1)
    tie = Candidate("t4", Prompt("Answer yes or no."), "instruct", "t1", val=dict(val), state=State.COMPLETE, trial=4)
    one = Candidate("t5", Prompt("Yes."), "cue", "t1", val=dict(val), state=State.COMPLETE, trial=5,
                    params={"collapsed": "yes"})

    def results(c: Candidate) -> dict[str, CaseResult]:
        n = 20 + 50 * len(c.prompt.demos)
        return {k: CaseResult(case_id=k, input="", output="", ideal=None, score=v, passed=None, prompt_tokens=n,
                              completion_tokens=1) for k, v in c.val.items()}

    def pick(best: Candidate, pool: list[Candidate]) -> tuple[str, str]:
        chosen, _, why = choose(best, base, pool, 40, objective="score", max_prompt_tokens=None, results=results,
                                price=None)
        return chosen.id, why

    assert pick(top, [base, top, tie]) == ("t4", "the best val score; of 2 candidates tied on it, the lowest tokens "
                                                 "per request")
    assert pick(top, [base, top, one]) == ("t1", "the best val score")  # one label: not a tie for a varied best
    assert pick(tie, [base, top, tie]) == ("t4", "the best val score")  # already the cheaper
    level = Candidate("t2", Prompt("Hm."), "instruct", "baseline", val={k: 0.0 for k in ids}, state=State.COMPLETE)
    assert pick(base, [base, level])[0] == "baseline"


def test_with_a_call_budget_the_draws_after_patience_go_on_until_the_budget_is_spent(dataset: Path,
                                                                                     prompt_file: Path,
                                                                                     fakes: Any) -> None:
    """Calls the user gave are not left unspent while demo draws on the best could still pay: with --max-calls
    the draws after patience end on the budget, not after `patience` of them."""
    fakes("fake/task", lambda m: "It is a product review.")  # nothing ever gains: patience runs out
    fakes("fake/reasoner", lambda m: "no")
    r = optimize(config(dataset, prompt_file, budget=Budget(max_calls=600, patience=4)))
    assert r.stop_reason == "budget"
    cands = [json.loads(x) for x in (Path(r.run_dir) / "candidates.jsonl").read_text().splitlines()]
    draws = [c for c in cands if c["params"].get("redraw")]
    assert len(draws) > 4 and all(c["parent"] == "baseline" for c in draws)
    assert r.model_calls + r.cached_calls <= 600


def test_a_custom_metrics_feedback_reaches_the_diagnosis(dataset: Path, prompt_file: Path, fakes: Any,
                                                         tmp_path: Path) -> None:
    """A custom metric may return feedback with its score (GEPA's evaluators do): it reaches the reasoning
    model's diagnosis of failing cases as a judge's reasoning does. Before, a pair was refused as a score."""
    metric = tmp_path / "my_metric.py"
    metric.write_text("def score(output, case):\n"
                      "    if output.strip() == case.ideal:\n        return 1.0, ''\n"
                      "    return 0.0, f'METRIC-NOTE: {case.ideal!r} was wanted, a bare label'\n")
    fakes("fake/task", lambda m: "?")
    asked: list[str] = []
    fakes("fake/reasoner", lambda m: asked.append(m[-1]["content"]) or "<prompt>Look at this again.</prompt>")
    r = optimize(config(dataset, prompt_file, scorer=ScorerSpec(metric=f"{metric}:score"),
                        budget=Budget(max_trials=12, patience=12)))
    assert r.baseline_val == 0.0
    diagnoses = [t for t in asked if "METRIC-NOTE" in t]
    assert diagnoses, "no reasoning-model request showed the metric's feedback"
    assert "Grader: METRIC-NOTE: 'positive' was wanted" in diagnoses[0] or \
        "Grader: METRIC-NOTE: 'negative' was wanted" in diagnoses[0]


def test_a_python_function_is_a_metric_of_the_python_api(dataset: Path, prompt_file: Path, fakes: Any,
                                                         tmp_path: Path) -> None:
    """`ro.optimize(..., metric=fn)`: the function scores each answer as a metric file's function would (with
    feedback), the run's config names it, and a process that was not given it says how to give it."""
    import reflexopt as ro
    from reflexopt.errors import MetricError
    from reflexopt.metrics import MetricScorer

    seen: list[str] = []

    def agrees(output: str, case: Any) -> tuple[float, str]:
        seen.append(output)
        right = output.strip() == case.ideal
        return float(right), "" if right else f"wanted {case.ideal}"

    fakes("fake/task", label_task())
    fakes("fake/reasoner", lambda m: "<prompt>Say positive or negative.</prompt>")
    r = ro.optimize(str(dataset), str(prompt_file), model="fake/task", reasoning_model="fake/reasoner",
                    metric=agrees, max_trials=4, run_dir=tmp_path / "run")
    assert seen and r.best_val > r.baseline_val
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["scorer"]["metric"]
    assert recorded == f"python:{__name__}.test_a_python_function_is_a_metric_of_the_python_api.<locals>.agrees"
    with pytest.raises(MetricError, match="pass the function again"):
        MetricScorer("python:elsewhere.metric")
    with pytest.raises(MetricError, match="not callable"):
        ro.optimize(str(dataset), str(prompt_file), model="fake/task", metric=42)  # type: ignore[arg-type]


def test_draws_after_patience_that_keep_collapsing_give_way_to_the_other_operators(dataset: Path,
                                                                                    prompt_file: Path,
                                                                                    fakes: Any) -> None:
    """A best prompt whose demos keep the model on one label: every demo draw on it after patience answers that
    label to every case and is stopped at its first check. After `patience` such draws the search goes on with
    its other operators instead of drawing until the budget is spent (issue: a constant-label best must never
    stall the search). Before, every trial after patience was another draw on that best."""

    def reply(messages: list[dict[str, str]]) -> str:
        return "positive" if len(messages) > 2 else "It is a product review."  # demos (chat turns): one label

    fakes("fake/task", reply)
    fakes("fake/reasoner", lambda m: "no")
    r = optimize(config(dataset, prompt_file, budget=Budget(max_calls=900, patience=3)))
    assert r.stop_reason == "budget"
    cands = [json.loads(x) for x in (Path(r.run_dir) / "candidates.jsonl").read_text().splitlines()]
    done = {c["id"]: c for c in cands if c["state"] != "running"}
    order = list(done.values())
    draws = [i for i, c in enumerate(order) if c["params"].get("redraw")]
    assert len(draws) >= 3, "patience never ran out: the fake should make no gain after the collapsed best"
    assert all(order[i]["pruned_by"] == "collapsed" for i in draws)
    # three collapsed draws in a row, then the policy: no fourth draw, and trials go on after the third
    assert len(draws) == 3 and draws[-1] < len(order) - 1
    assert any(not c["params"].get("redraw") for c in order[draws[-1] + 1:])
    events = (Path(r.run_dir) / "events.jsonl").read_text()
    assert "the search goes on with its other operators instead" in events
