"""The operator registry and policy, and the no-LLM operators: the search must still win when the reasoning
model never writes a usable prompt."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import names_labels, write_jsonl

from reflexopt import operators
from reflexopt.config import Budget, DataSpec, ModelSpec, OptimizeConfig, ScorerSpec
from reflexopt.data import Case
from reflexopt.diagnose import Diagnosis
from reflexopt.models import FunctionModel, register_fake, unregister_fake
from reflexopt.operators import Outcome, available, choose, reasoner_ok, untried
from reflexopt.optimizer import optimize
from reflexopt.pool import Candidate
from reflexopt.prompt import Prompt, parse_prompt
from reflexopt.prompts import meta_prompt
from reflexopt.propose import choose_demos, propose
from reflexopt.search import Search
from reflexopt.workload import input_kind, task_facts


def test_registry_is_the_one_list_every_part_reads() -> None:
    assert set(operators.LLM_OPERATORS) == {"induce", "fix", "restructure", "constraints", "compress", "merge"}
    assert len(operators.NAMES) == len(set(operators.NAMES))
    assert all(operators.get(n).name == n for n in operators.NAMES)


def test_untried_families_come_first_then_sampling_is_seeded() -> None:
    ops = available(categorical=True, has_references=True, has_train=True, reasoner=True, reasoner_healthy=True)
    history: list[Outcome] = []
    order = []
    for _ in range(6):
        op = choose(ops, history, random.Random(0))
        order.append(op)
        history.append(Outcome(op, op, asked_llm=op in operators.LLM_OPERATORS))
    # one trial per family (the rewrites by the reasoning model are one family), then sampling
    assert order == ["instruct", "demos", "cue", "format", "structure", "fix"] and not untried(ops, history)
    a = [choose(ops, history, random.Random(f"7-{i}")) for i in range(20)]
    b = [choose(ops, history, random.Random(f"7-{i}")) for i in range(20)]
    assert a == b


def test_credit_goes_to_the_operator_that_ran() -> None:
    ops = ("demos", "fix")
    # fix was asked 5 times, fell back each time; demos won every time it ran
    history = [Outcome("instruct", "fix", asked_llm=True) for _ in range(5)]
    history += [Outcome("demos", "demos", improved=True) for _ in range(5)]
    picks = [choose(ops, history, random.Random(i)) for i in range(200)]
    assert picks.count("demos") > 180


def test_sampling_is_over_families_and_each_rewrite_gets_its_turn() -> None:
    ops = available(categorical=True, has_references=True, has_train=True, reasoner=True, reasoner_healthy=True)
    history = [Outcome(op, op, asked_llm=op == "fix") for op in ("instruct", "demos", "cue", "format", "structure",
                                                                  "fix")]
    history[1] = Outcome("demos", "demos", improved=True)
    picks = [choose(ops, history, random.Random(i)) for i in range(400)]
    # demos won its only trial: drawn as often as the five untried rewrites together would be by operator
    assert picks.count("demos") > picks.count("fix") and "restructure" in picks and "compress" not in picks
    assert set(picks) & set(operators.LLM_OPERATORS) == {"restructure"}  # the least-asked rewrite, in order


def test_reasoner_is_given_up_when_its_rewrites_stay_unusable() -> None:
    bad = [Outcome("instruct", "fix", asked_llm=True, llm_usable=False)] * 3
    assert not reasoner_ok(bad)
    assert reasoner_ok(bad[:2])
    mixed = [Outcome("fix", "fix", asked_llm=True, llm_usable=True)] + bad * 2
    assert reasoner_ok(mixed[:3]) and not reasoner_ok(mixed + bad)
    ops = available(categorical=True, has_references=True, has_train=True, reasoner=True, reasoner_healthy=False)
    assert not set(ops) & set(operators.LLM_OPERATORS)
    free = available(categorical=False, has_references=False, has_train=True, reasoner=True, reasoner_healthy=False)
    assert free == ("structure",)


def _cases(n: int = 40) -> list[Case]:
    labs = ["alpha", "beta", "gamma"]
    return [Case(id=str(i), input=f"item {i}?", ideal=labs[i % 3] if i % 5 else "alpha") for i in range(n)]


def test_demo_space_pick_order_balance() -> None:
    train = _cases()
    facts = task_facts(train)
    bal = choose_demos(train, 6, 1, facts, pick="balanced", order="cycle")
    assert sorted(d.output for d in bal) == ["alpha", "alpha", "beta", "beta", "gamma", "gamma"]
    grouped = choose_demos(train, 6, 1, facts, pick="balanced", order="grouped")
    assert [d.output for d in grouped] == sorted(d.output for d in grouped)
    assert choose_demos(train, 6, 1, facts, pick="random") == choose_demos(train, 6, 1, facts, pick="random")
    assert choose_demos(train, 6, 1, facts, pick="random") != choose_demos(train, 6, 2, facts, pick="random")


def test_a_prior_demo_set_shows_each_label_as_often_as_its_share_of_train() -> None:
    from collections import Counter

    from reflexopt.propose import prior_quota

    assert prior_quota({"a": 150, "b": 50}, 8) == {"a": 6, "b": 2}
    assert prior_quota({"a": 116, "b": 84}, 8) == {"a": 5, "b": 3}  # largest remainder
    assert prior_quota({"a": 98, "b": 1, "c": 1}, 4) == {"a": 2, "b": 1, "c": 1}  # every label at least once
    assert prior_quota({"a": 5, "b": 3, "c": 2}, 2) == {"a": 1, "b": 1, "c": 0}  # fewer demos than labels
    assert sum(prior_quota({"a": 7, "b": 6, "c": 6, "d": 1}, 11).values()) == 11
    train = [Case(id=str(i), input=f"item {i}?", ideal="yes" if i % 4 else "no") for i in range(40)]
    facts = task_facts(train)
    prior = choose_demos(train, 8, 0, facts, pick="prior", order="cycle")
    assert Counter(d.output for d in prior) == {"yes": 6, "no": 2}
    assert Counter(d.output for d in choose_demos(train, 8, 0, facts, pick="balanced")) == {"yes": 4, "no": 4}
    assert prior == choose_demos(train, 8, 0, facts, pick="prior", order="cycle")  # seeded


def test_the_prior_demo_set_is_asked_once_and_only_while_every_candidate_is_below_the_constant_answer() -> None:
    from types import SimpleNamespace

    from reflexopt.pool import State
    from reflexopt.strategies.reflex import ReflexStrategy

    ids = [str(i) for i in range(10)]

    class Ctx:
        facts = SimpleNamespace(categorical=True)
        val = ids

        async def constant_val(self) -> float:
            return 0.6  # six of ten cases carry the train split's most common label

    def cand(cid: str, right: int, **params: Any) -> Candidate:
        return Candidate(cid, Prompt(text=cid), "demos", "baseline", params=params).scored(
            {i: float(n < right) for n, i in enumerate(ids)}, State.COMPLETE)

    demos = [Outcome("demos", "demos")]

    def asks(pool: list[Candidate], history: list[Outcome]) -> bool:
        return asyncio.run(ReflexStrategy.below_constant(Ctx(), pool, history))  # type: ignore[arg-type]

    assert asks([cand("baseline", 0), cand("t1", 5)], demos)
    assert not asks([cand("baseline", 0), cand("t1", 6)], demos)  # a tie already scores what it would
    assert not asks([cand("baseline", 0), cand("t1", 5)], [Outcome("instruct", "instruct")])  # no demos yet
    assert not asks([cand("baseline", 0), cand("t1", 5), cand("t2", 4, demo_pick="prior")], demos)  # once
    Ctx.facts = SimpleNamespace(categorical=False)
    assert not asks([cand("baseline", 0), cand("t1", 5)], demos)


def test_task_facts_name_the_input_kind() -> None:
    assert input_kind("Tell me about this review.", []) == "review"
    assert input_kind("Here is a chat.", []) == "chat"
    assert input_kind("Here's an email: {input}", []) == "email"
    assert input_kind("What kind of question is this?", _cases()) == "question"
    assert input_kind("Do it.", [Case(id="1", input="a statement")]) == "text"


def test_every_no_llm_operator_records_its_reasoning() -> None:
    train = _cases()
    facts = task_facts(train, "Label this ticket.")
    parent = Prompt("Label this ticket.\n")
    seen = set()
    for op, params in [("instruct", {"phrasing": 2, "keep_parent": False}),
                       ("demos", {"n_demos": 3, "demo_pick": "balanced", "demo_order": "shuffled",
                                  "demo_style": "inline", "demo_seed": 4}),
                       ("cue", {"cue": "options"}), ("format", {}),
                       ("structure", {"instruction_role": "user", "demo_style": "turns"})]:
        cand, prop = asyncio.run(propose({"operator": op, **params}, parent, train=train, facts=facts,
                                         reasoner=None, diagnosis=Diagnosis(), failing=[], other=None))
        assert prop.operator == op and prop.reasoning and not prop.fallback
        seen.add(cand.canonical().to_markdown())
        assert parse_prompt(cand.to_markdown()) == cand.with_(source="<prompt>")
    assert len(seen) == 5
    cand, _ = asyncio.run(propose({"operator": "instruct", "phrasing": 0, "keep_parent": False}, parent, train=train,
                                  facts=facts, reasoner=None, diagnosis=Diagnosis(), failing=[], other=None))
    assert "ticket" in cand.text and all(lab in cand.text for lab in ("alpha", "beta", "gamma"))


def test_prompts_that_render_alike_share_a_key() -> None:
    a = Candidate("a", Prompt("Classify {input}\n", instruction_role="user"))
    b = Candidate("b", Prompt("Classify {input}\n", instruction_role="system", demo_style="inline"))
    c = Candidate("c", Prompt("Classify {input}\n", answer_cue="Answer:"))
    assert a.key == b.key != c.key


@pytest.fixture
def task_files(tmp_path: Path) -> tuple[Path, Path]:
    rows = [{"input": f"{'good' if i % 2 else 'bad'} gadget {i}", "ideal": "positive" if i % 2 else "negative"}
            for i in range(90)]
    (tmp_path / "p.md").write_text("Look at this.\n")
    return write_jsonl(tmp_path / "d.jsonl", rows), tmp_path / "p.md"


@pytest.fixture
def fake_models() -> Any:
    def task(messages: list[dict[str, str]]) -> str:
        text = " ".join(m["content"] for m in messages)
        item = messages[-1]["content"]
        return ("positive" if "good" in item else "negative") if names_labels(text) else "a gadget"

    register_fake("fake/task", FunctionModel(task))
    garbage = FunctionModel(lambda m: "<prompt></prompt> no idea")
    register_fake("fake/garbage", garbage)
    yield garbage
    unregister_fake("fake/task")
    unregister_fake("fake/garbage")


def _config(data: Path, prompt: Path, **budget: Any) -> OptimizeConfig:
    return OptimizeConfig(data=DataSpec(path=str(data)), prompt_path=str(prompt), model=ModelSpec(id="fake/task"),
                          reasoning=ModelSpec(id="fake/garbage"), scorer=ScorerSpec(metric="contains"),
                          budget=Budget(**{"max_trials": 16, "patience": 2, **budget}), seed=3)


def test_a_useless_reasoner_is_dropped_and_fallbacks_are_recorded_as_what_ran(task_files: Any,
                                                                              fake_models: Any) -> None:
    data, prompt = task_files
    # patience long enough for the rewrite family, which keeps losing, to be drawn three times
    r = optimize(_config(data, prompt, patience=20, max_trials=60))
    assert r.best_test > r.baseline_test + 0.5 and r.significant
    cands = [json.loads(x) for x in (Path(r.run_dir) / "candidates.jsonl").read_text().splitlines()]
    fell = [c for c in cands if c.get("fallback")]
    assert fell and all(c["operator"] not in operators.LLM_OPERATORS and c["asked"] in operators.LLM_OPERATORS
                        for c in fell)
    events = [json.loads(x) for x in (Path(r.run_dir) / "events.jsonl").read_text().splitlines()]
    assert any(e["event"] == "reasoner_given_up" for e in events)
    rewrites = [c for c in cands if c.get("asked") in operators.LLM_OPERATORS]
    assert len(rewrites) <= operators.GIVE_UP_AFTER


def test_patience_waits_until_every_family_was_tried(task_files: Any, fake_models: Any) -> None:
    data, prompt = task_files
    r = optimize(_config(data, prompt, patience=1, max_trials=30))
    ran = set(r.operators or {})
    assert {"instruct", "demos", "cue", "format", "structure"} <= ran
    assert r.stop_reason.startswith("no accepted gain")


def test_same_seed_same_run(task_files: Any, fake_models: Any, tmp_path: Path) -> None:
    data, prompt = task_files
    runs = []
    for i in range(2):
        r = optimize(_config(data, prompt).model_copy(update={"concurrency": 1}),
                     run_dir=tmp_path / f"run{i}")
        cands = [json.loads(x) for x in (Path(r.run_dir) / "candidates.jsonl").read_text().splitlines()]
        runs.append(([(c["id"], c["operator"], c["parent"], c["key"], c["val_mean"]) for c in cands],
                     r.best_candidate, r.best_test))
    assert runs[0] == runs[1]


def test_search_space_is_conditional_on_the_operator(tmp_path: Path) -> None:
    s = Search(f"sqlite:///{tmp_path / 's.db'}", "x", seed=0)
    t = s.ask()
    p = t.suggest("demos", n_train=30, n_labels=6)
    assert {"n_demos", "demo_pick", "demo_order", "demo_style", "demo_seed"} <= set(p) and 1 <= p["n_demos"] <= 12
    t2 = s.ask()
    assert set(t2.suggest("cue", n_train=30, n_labels=6)) == {"operator", "cue"}


def test_gate_stops_a_candidate_no_better_than_its_parent_at_the_first_check(tmp_path: Path) -> None:
    s = Search(f"sqlite:///{tmp_path / 's.db'}", "x", seed=0, n_startup_steps=4)
    parent = {i: float(i % 2) for i in range(20)}  # 0.5 on every 4 cases
    tie = s.ask()
    tie.gate_on(parent)
    for i in range(3):
        tie.report(parent[i], i)
        assert not tie.should_prune()  # before the first check: never
    tie.report(parent[3], 3)
    assert tie.should_prune() and tie.pruned_by == "gate"  # equal to the parent: no gain shown

    mixed = s.ask()  # the same total, but it fixes a case the parent failed (and breaks another): goes on
    mixed.gate_on(parent)
    for i, v in enumerate([1.0, 0.0, 0.0, 1.0]):  # the parent has 0, 1, 0, 1
        mixed.report(v, i)
    assert not mixed.should_prune()

    worse = s.ask()
    worse.gate_on(parent)
    for i, v in enumerate([1.0, 0.0, 0.0, 0.0]):  # better on case 0, but 1 against the parent's 2
        worse.report(v, i)
    assert worse.should_prune() and worse.pruned_by == "gate"

    better = s.ask()
    better.gate_on(parent)
    for i in range(4):
        better.report(1.0, i)
    assert not better.should_prune()  # beat the parent on the minibatch: goes on
    for i in range(4, 8):
        better.report(0.0, i)
    assert not better.should_prune()  # the gate is asked once; no best to compare with: never pruned later

    free = s.ask()  # no parent given (e.g. the parent is not complete on val): no gate
    for i in range(4):
        free.report(parent[i], i)
    assert not free.should_prune() and free.pruned_by == ""


def test_with_a_noisy_judge_the_gate_stops_only_a_loss_the_noise_does_not_explain(tmp_path: Path) -> None:
    """Judge scores on 0..1 carry the judge's own noise. An edit as good as its parent scores below it on the
    first 15 cases about half the time by that noise alone; the gate now stops it only when its total is lower
    by more than one SD of what judging moves the difference (noise × √(2n)): 0.15 × √30 ≈ 0.82 on 15 cases."""
    s = Search(f"sqlite:///{tmp_path / 's.db'}", "x", seed=0, n_startup_steps=15)
    parent = {i: 0.75 for i in range(30)}

    def trial(scores: list[float], noise: float) -> bool:
        t = s.ask()
        t.gate_on(parent, noise)
        for i, v in enumerate(scores):
            t.report(v, i)
        return t.should_prune()

    slightly = [0.75] * 13 + [0.5, 0.5]  # 0.5 below the parent's total: within the noise
    assert trial(slightly, 0.0)  # exact scores: no gain shown, stopped as before
    assert not trial(slightly, 0.15)
    clearly = [0.75] * 9 + [0.5] * 6  # 1.5 below: more than the noise explains
    assert trial(clearly, 0.15)


def test_pruning_off_turns_the_gate_off(tmp_path: Path) -> None:
    s = Search(f"sqlite:///{tmp_path / 's.db'}", "x", seed=0, pruning=False)
    t = s.ask(best={i: 1.0 for i in range(40)})
    t.gate_on({i: 1.0 for i in range(40)})
    for i in range(40):
        t.report(0.0, i)
        assert not t.should_prune()


def test_a_demos_trial_around_the_parent_keeps_its_shape_and_draws_other_examples(tmp_path: Path) -> None:
    from reflexopt.prompt import Demo
    from reflexopt.strategies.reflex import demo_shape

    shape = {"n_demos": 4, "demo_pick": "random", "demo_order": "grouped", "demo_style": "turns"}
    base = Candidate("baseline", Prompt("P"), state="complete")
    d = Candidate("t1", Prompt("P", demos=(Demo("a", "x"),), demo_style="turns"), "demos", "baseline",
                  params={**shape, "demo_seed": 3}, state="complete", trial=1)
    # a structure trial on top changed how the demos are shown: the shape follows the child
    s = Candidate("t2", Prompt("P", demos=(Demo("a", "x"),), demo_style="inline"), "structure", "t1",
                  params={"instruction_role": "user"}, state="complete", trial=2)
    pool = [base, d, s]
    assert demo_shape(s, pool) == {**shape, "demo_style": "inline"}
    assert demo_shape(d, pool) == shape
    assert demo_shape(base, pool) is None  # no demos
    user = Candidate("baseline", Prompt("P", demos=(Demo("a", "x"),)), state="complete")
    assert demo_shape(user, [user]) is None  # demos from the starting prompt: no settings to keep

    search = Search(f"sqlite:///{tmp_path / 's.db'}", "x", seed=0)
    t = search.ask()
    p = t.suggest("demos", n_train=30, n_labels=2, around=shape)
    assert {k: p[k] for k in shape} == shape and p["demo_seed"] == 100 + t.number
    assert t._t.params == {}  # not TPE's choice: TPE does not learn from it


def test_a_demo_draw_after_patience_is_accepted_on_any_gain_as_other_steps_are() -> None:
    """No one-case margin for draws after patience (it held back steps that paid on the dev spec's held-back
    rows); a judge's noise bar still applies to them."""
    from reflexopt.pool import State, select

    ids = [str(i) for i in range(10)]
    base = Candidate("baseline", Prompt(text="a")).scored({i: 0.0 for i in ids}, State.COMPLETE)

    def cand(cid: str, right: int, **params: Any) -> Candidate:
        return Candidate(cid, Prompt(text=cid), "demos", "baseline", params=params).scored(
            {i: float(n < right) for n, i in enumerate(ids)}, State.COMPLETE)

    assert select([base, cand("t1", 1)], 10, 0.0).best.id == "t1"  # any gain, for an ordinary trial
    assert select([base, cand("t1", 1, redraw=True)], 10, 0.0).best.id == "t1"  # and for a draw
    assert select([base, cand("t1", 2), cand("t2", 3, redraw=True)], 10, 0.0).accepted == ("baseline", "t1", "t2")
    assert select([base, cand("t1", 2, redraw=True)], 10, 0.25).best.id == "baseline"  # judge noise still counts


def test_a_prompt_that_varies_its_answers_takes_the_place_of_a_constant_answer_only_above_its_val() -> None:
    """A best that answers one label scores that label's share of val. One that tells the cases apart and scores
    above it replaces it, without a judge's noise bar; one at the same score does not (a tie at the label's share
    is no sign of skill, and the constant answer's val score is the one test repeats), nor does one below it or a
    second constant answer. Such a parent does not gate its children."""
    from reflexopt.pool import State, gates, select

    ids = [str(i) for i in range(10)]
    base = Candidate("baseline", Prompt(text="a")).scored({i: 0.0 for i in ids}, State.COMPLETE)
    flat = {"collapsed": {"label": "positive", "answers": 10, "of": 10}}

    def cand(cid: str, right: int, **params: Any) -> Candidate:
        return Candidate(cid, Prompt(text=cid), "demos", "baseline", params=params).scored(
            {i: float(n < right) for n, i in enumerate(ids)}, State.COMPLETE)

    const = cand("t1", 6, **flat)
    assert select([base, const, cand("t2", 7)], 10, 0.0).best.id == "t2"
    assert select([base, const, cand("t2", 7)], 10, 0.25).best.id == "t2"  # no judge noise bar against it
    assert select([base, const, cand("t2", 7, redraw=True)], 10, 0.0).accepted == ("baseline", "t1", "t2")
    assert select([base, const, cand("t2", 6)], 10, 0.0).best.id == "t1"
    assert select([base, const, cand("t2", 5)], 10, 0.0).best.id == "t1"
    assert select([base, const, cand("t2", 6, **flat)], 10, 0.0).best.id == "t1"
    assert select([base, cand("t1", 6), cand("t2", 6)], 10, 0.0).best.id == "t1"  # equal, both vary: no change
    assert gates(cand("t2", 6), 10) and not gates(const, 10)
    partial = Candidate("t3", Prompt(text="t3")).scored({"0": 1.0}, State.PRUNED)
    assert not gates(partial, 10)


def test_with_a_noisy_judge_a_gain_is_accepted_by_the_spread_of_its_per_case_differences() -> None:
    """The bar is twice the standard error of the differences from the best, not a fixed bar from the judge's
    redraw noise: a gain made of many cases that each moved a little is taken even under that bar, and one case
    that jumped is not taken even above it."""
    from reflexopt.pool import State, select

    ids = [str(i) for i in range(10)]
    base = Candidate("baseline", Prompt(text="a")).scored({i: 0.25 for i in ids}, State.COMPLETE)

    def cand(cid: str, scores: list[float]) -> Candidate:
        return Candidate(cid, Prompt(text=cid), "fix", "baseline").scored(dict(zip(ids, scores)), State.COMPLETE)

    steady = cand("t1", [0.5] * 8 + [0.25] * 2)  # +0.2 on the mean, 8 cases up a step each
    assert select([base, steady], 10, 0.3).best.id == "t1"
    jump = cand("t1", [1.0] + [0.25] * 9)  # +0.075 on the mean, from one case
    assert select([base, jump], 10, 0.05).best.id == "baseline"
    assert select([base, jump], 10, 0.0).best.id == "t1"  # exact scores: any gain, as before
    mixed = cand("t1", [0.5] * 6 + [0.0] * 3 + [0.25])  # 6 up, 3 down: +0.075, too spread to tell
    assert select([base, mixed], 10, 0.01).best.id == "baseline"


def test_a_rewrite_that_comes_back_unusable_is_applied_as_added_sentences(fakes: Any) -> None:
    """A mid-size reasoning model diagnosed the problem but copied the prompt back when asked for a whole
    rewrite; asked for the sentences to add, it writes them. On a free-text task the diagnosis is applied, not
    wasted on the no-LLM fallback; a reply that echoes the request falls back as before."""
    from reflexopt.diagnose import FailureCategory
    from reflexopt.models import get_client

    parent = Prompt("Here is a chat. {input}\n")

    def copies_back(messages: list[dict[str, str]]) -> str:
        if "<add>" in messages[-1]["content"]:
            return "Sure. <add>Summarize the chat in two sentences: who wants what, and what was agreed.</add>"
        return f"<prompt>{parent.text}</prompt>"

    fakes("fake/copier", copies_back)
    diag = Diagnosis((FailureCategory("Missing summary", "the reply does not summarise the chat",
                                      "ask for a summary", 5),), "model")
    chats = [Case(id=str(i), input=f"A: hi {i}\nB: hello", ideal=f"They greet each other {i} times, then part "
                                                                 "as friends. Nothing else is agreed.")
             for i in range(6)]
    facts = task_facts(chats, parent.text)
    assert not facts.categorical
    cand, prop = asyncio.run(propose({"operator": "fix"}, parent, train=[], facts=facts,
                                     reasoner=get_client(ModelSpec(id="fake/copier")), diagnosis=diag, failing=[],
                                     other=None))
    assert prop.operator == "fix" and not prop.fallback and prop.reasoning_calls == 2
    assert cand.text == "Here is a chat. {input}\n\nSummarize the chat in two sentences: who wants what, and " \
                        "what was agreed.\n"
    fakes("fake/echo", lambda m: "<add>Write only the sentences to add, between the tags.</add>")
    _, prop = asyncio.run(propose({"operator": "fix"}, parent, train=[], facts=facts,
                                  reasoner=get_client(ModelSpec(id="fake/echo")), diagnosis=diag, failing=[],
                                  other=None))
    assert prop.fallback and prop.operator != "fix"
    # the model never sees the references: an amendment that points it at them is not applied
    fakes("fake/leaky", lambda m: "<add>State the business impact, using the value from the reference answer.</add>"
          if "<add>" in m[-1]["content"] else f"<prompt>{parent.text}</prompt>")
    _, prop = asyncio.run(propose({"operator": "fix"}, parent, train=[], facts=facts,
                                  reasoner=get_client(ModelSpec(id="fake/leaky")), diagnosis=diag, failing=[],
                                  other=None))
    assert prop.fallback and prop.operator != "fix"


def test_what_counts_as_pointing_the_model_at_the_references() -> None:
    """Only phrases that send the model to the references it never sees are refused; ordinary instructions that
    say "correct", "expected" or "reference" are not (a prompt whose input is a reference text may say so)."""
    from reflexopt.propose import points_at_references

    parent = "Here is a report. {input}"
    for leaky in ("State the impact, using the value from the reference answer.",
                  "Match the ideal summary's length.", "Give the expected answer.", "Quote the ground truth."):
        assert points_at_references(leaky, parent), leaky
    for fine in ("Reply in the expected output format.", "Give the correct answer in one sentence.",
                 "Write a correct summary of the report.", "Use only facts from the reference text below."):
        assert not points_at_references(fine, parent), fine
    # the user's own prompt already speaks of a reference answer: repeating it is no new pointer
    assert not points_at_references("Compare with the reference answer.", "Compare with the reference answer. {input}")


def test_on_free_text_a_whole_rewrite_that_points_at_the_references_is_not_used(fakes: Any) -> None:
    """The check an amendment gets also applies to a whole rewrite on free text, and the rewrite is asked for
    general fixes; on a label task (whose references are labels a prompt may name) both are as before."""
    from reflexopt.diagnose import FailureCategory
    from reflexopt.models import get_client

    asked: list[str] = []

    def leaky(messages: list[dict[str, str]]) -> str:
        asked.append(messages[-1]["content"])
        if "<add>" in messages[-1]["content"]:
            return "<add>Summarize the chat in two sentences.</add>"
        return "<prompt>Summarize this chat as the reference summary does. {input}</prompt>"

    fakes("fake/leaky-rewrite", leaky)
    diag = Diagnosis((FailureCategory("Missing summary", "no summary asked", "ask for a summary", 5),), "model")
    parent = Prompt("Here is a chat. {input}\n")
    chats = [Case(id=str(i), input=f"A: hi {i}\nB: hello", ideal=f"They greet each other {i} times, then part "
                                                                 "as friends. Nothing else is agreed.")
             for i in range(6)]
    free = task_facts(chats, parent.text)
    cand, prop = asyncio.run(propose({"operator": "fix"}, parent, train=[], facts=free,
                                     reasoner=get_client(ModelSpec(id="fake/leaky-rewrite")), diagnosis=diag,
                                     failing=[], other=None))
    assert "reference summary" not in cand.text and prop.operator == "fix"  # the amendment was used instead
    assert cand.text.endswith("Summarize the chat in two sentences.\n")
    general = meta_prompt("general_fixes").strip()
    assert general in " ".join(asked[0].split()) and general in " ".join(asked[1].split())
    labels = [Case(id=str(i), input=f"review {i}", ideal=("positive", "negative")[i % 2]) for i in range(6)]
    facts = task_facts(labels, parent.text)
    assert facts.categorical
    asked.clear()
    cand, prop = asyncio.run(propose({"operator": "fix"}, parent, train=[], facts=facts,
                                     reasoner=get_client(ModelSpec(id="fake/leaky-rewrite")), diagnosis=diag,
                                     failing=[], other=None))
    assert cand.text == "Summarize this chat as the reference summary does. {input}\n" and not prop.fallback
    assert "never sees" not in asked[0] and "$general" not in asked[0]


def test_on_free_text_the_diagnosis_asks_for_fixes_that_hold_for_every_input(fakes: Any) -> None:
    """Shown each failing case's reference, a reasoner quotes it into the fix ("state the $1.5M impact from the
    reference"). On free text the diagnosis asks for general fixes; a label task's meta-prompt is unchanged."""
    from reflexopt.diagnose import diagnose
    from reflexopt.evaluate import CaseResult
    from reflexopt.models import get_client

    asked: list[str] = []

    def reply(messages: list[dict[str, str]]) -> str:
        asked.append(messages[-1]["content"])
        return '{"categories": [{"name": "Missing impact", "root_cause": "no impact asked", "fix": "State the ' \
               'business impact.", "cases": 2}]}'

    fakes("fake/diag", reply)
    failing = [CaseResult(case_id="1", input="report 1", output="x", ideal="Impact was $1.5M.", score=0.0,
                          passed=False)]
    for free in (True, False):
        d = asyncio.run(diagnose(get_client(ModelSpec(id="fake/diag")), Prompt(f"Here is a report {free}."),
                                 failing, free_text=free))
        assert d.source == "model"
    assert meta_prompt("general_fixes").strip() in " ".join(asked[0].split())
    assert "never sees the expected answers" not in asked[1] and "$general" not in asked[1]


def _chats(n: int = 40) -> list[Case]:
    """Long inputs, short references (a summary each) that reuse few of the input's words."""
    return [Case(id=str(i), input=" ".join(f"Speaker{j % 2} says line {j} about topic {i}." for j in range(12)),
                 ideal=f"They discuss topic {i}. They agree.") for i in range(n)]


def test_free_text_facts_say_what_the_references_do_with_their_input() -> None:
    assert task_facts(_chats()).form == "condense"
    rewrites = [Case(id=str(i), input=f"The cat {i} chased the dog.", ideal=f"The dog was chased by the cat {i}.")
                for i in range(10)]
    assert task_facts(rewrites).form == "rewrite"
    answers = [Case(id=str(i), input=f"Name a colour {i}.", ideal=f"Blue is a colour often seen in the sky {i}.")
               for i in range(10)]
    assert task_facts(answers).form == ""  # longer than the input, in other words: neither
    assert task_facts(_cases()).form == ""  # labels
    assert "instruct" in available(categorical=False, has_references=True, has_train=True, reasoner=False,
                                   reasoner_healthy=False, form="condense")
    assert "instruct" not in available(categorical=False, has_references=True, has_train=True, reasoner=False,
                                       reasoner_healthy=False, form="")


def test_a_vague_free_text_prompt_gets_an_instruction_from_the_references_form(tmp_path: Path) -> None:
    """A vague prompt ("Here is a chat.") never says what to write; on free text there was no instruction
    operator, so only the reasoning model could say it. From the references alone: they condense the input to
    about 6 words in 2 sentences, so the instruction asks for a summary of that size."""
    chats = _chats()
    facts = task_facts(chats, "Here is a chat.")
    parent = Prompt("Here is a chat.\n")
    cand, prop = asyncio.run(propose({"operator": "instruct", "phrasing": 0, "keep_parent": True}, parent,
                                     train=chats, facts=facts, reasoner=None, diagnosis=Diagnosis(), failing=[],
                                     other=None))
    assert prop.operator == "instruct" and "condense" in prop.reasoning
    assert cand.text == "Here is a chat.\n\nSummarize the chat in 2 sentences, about 6 words.\n"

    # through a run: a task model that summarises only when asked to, scored by token F1 against the references
    rows = [{"input": c.input, "ideal": c.ideal} for c in chats]
    data = write_jsonl(tmp_path / "chats.jsonl", rows)
    (tmp_path / "p.md").write_text("Here is a chat.\n")

    def task(messages: list[dict[str, str]]) -> str:
        text = " ".join(m["content"] for m in messages)
        topic = messages[-1]["content"].split("about topic ")[1].split(".")[0]
        asked = "Summarize" in text or "summary" in text or "main points" in text
        return f"They discuss topic {topic}. They agree." if asked else messages[-1]["content"]

    register_fake("fake/summariser", FunctionModel(task))
    try:
        r = optimize(OptimizeConfig(data=DataSpec(path=str(data)), prompt_path=str(tmp_path / "p.md"),
                                    model=ModelSpec(id="fake/summariser"), scorer=ScorerSpec(metric="f1"),
                                    rewrites=False, budget=Budget(max_trials=6, patience=6), seed=1))
    finally:
        unregister_fake("fake/summariser")
    assert r.significant and r.best_test > r.baseline_test + 0.5
    assert any(w in r.best_prompt for w in ("Summarize the text", "summary of the text", "main points"))


def test_induce_refuses_a_reply_that_describes_the_request_and_only_that() -> None:
    from reflexopt.propose import ECHO

    for echo in ("Your task is to write an instruction that describes these input-output pairs.",
                 "Write the instruction that would make a writer produce outputs like these from new inputs.",
                 "Produce outputs like the examples above for every input."):
        assert ECHO.search(echo), echo
    for answer in ("Summarise the chat in two sentences. If the chat gives an instruction, say what the "
                   "instruction asks for.", "Rewrite the sentence in the passive voice, as the examples do."):
        assert not ECHO.search(answer), answer


def _passive(n: int = 30) -> list[Case]:
    """A rewrite whose references say what the task is (the passive voice) and its form alone does not."""
    return [Case(id=str(i), input=f"The cat {i} chased the dog {i}.", ideal=f"The dog {i} was chased by the cat {i}.")
            for i in range(n)]


def test_induce_works_out_the_instruction_from_train_inputs_and_their_references(tmp_path: Path) -> None:
    """On free text the task instruction from the references' form can say "rewrite in about 8 words", never
    "in the passive voice": only a model that reads the examples can. `induce` shows the reasoning model train
    inputs with their references (one call, no diagnosis) and uses the prompt it writes. Not offered on a label
    task (the instruction from the facts names the labels) nor in a pipeline."""
    from reflexopt.models import get_client
    from reflexopt.propose import induction_examples

    rows = _passive()
    facts = task_facts(rows, "Here is a sentence.")
    assert facts.form == "rewrite"
    free = available(categorical=False, has_references=True, has_train=True, reasoner=True, reasoner_healthy=True,
                     form="rewrite")
    assert "induce" in free and free.index("induce") < free.index("fix")  # the rewrite family's first
    for kw in (dict(categorical=True, form=""), dict(categorical=False, form="rewrite", renders=False)):
        assert "induce" not in available(has_references=True, has_train=True, reasoner=True,
                                         reasoner_healthy=True, **kw)  # type: ignore[arg-type]
    a, b = induction_examples(rows, "3-0"), induction_examples(rows, "3-1")
    assert a == induction_examples(rows, "3-0") and a != b and a.count("Output:") == 5
    assert "was chased by" in a

    def reasoner(messages: list[dict[str, str]]) -> str:
        text = messages[-1]["content"]
        if "Output:" in text and "was chased by" in text:
            return "They swap subject and object.<instruction>Rewrite the sentence in the passive voice.</instruction>"
        return "I cannot help."

    fakes_ = FunctionModel(reasoner)
    register_fake("fake/inducer", fakes_)
    calls: list[int] = []
    try:  # the instruction replaces a text without placeholders, and goes below one whose placeholders carry the input
        for parent, want in ((Prompt("Here is a sentence.\n"), "Rewrite the sentence in the passive voice.\n"),
                             (Prompt("Sentence: {input}\n"),
                              "Sentence: {input}\n\nRewrite the sentence in the passive voice.\n")):
            cand, prop = asyncio.run(propose({"operator": "induce", "phrasing": 3}, parent, train=rows, facts=facts,
                                             reasoner=get_client(ModelSpec(id="fake/inducer")),
                                             diagnosis=Diagnosis(), failing=[], other=None))
            assert cand.text == want and prop.operator == "induce"
            calls.append(prop.reasoning_calls)
        assert calls == [1, 0]  # the question shows the examples alone: the second parent's is answered from cache
        # a reply that describes the question instead of answering it (seen from Qwen2.5-Coder-1.5B) is not used
        register_fake("fake/echo-inducer", FunctionModel(lambda m: "<instruction>Your task is to write an "
                                                         "instruction that describes these input-output pairs."
                                                         "</instruction>"))
        _, prop = asyncio.run(propose({"operator": "induce", "phrasing": 3}, Prompt("Here is a sentence.\n"),
                                      train=rows, facts=facts, reasoner=get_client(ModelSpec(id="fake/echo-inducer")),
                                      diagnosis=Diagnosis(), failing=[], other=None))
        assert prop.fallback and prop.operator == "format"
    finally:
        unregister_fake("fake/inducer")
        unregister_fake("fake/echo-inducer")

    def task(messages: list[dict[str, str]]) -> str:
        said = " ".join(m["content"] for m in messages)
        cat, dog = messages[-1]["content"].split(" chased ")
        return f"{dog.rstrip('.').capitalize()} was chased by {cat.lower()}." if "passive" in said else "Sure."

    data = write_jsonl(tmp_path / "passive.jsonl", [{"input": c.input, "ideal": c.ideal} for c in rows])
    (tmp_path / "p.md").write_text("Here is a sentence.\n")
    register_fake("fake/passive", FunctionModel(task))
    register_fake("fake/inducer", FunctionModel(reasoner))
    try:
        r = optimize(OptimizeConfig(data=DataSpec(path=str(data)), prompt_path=str(tmp_path / "p.md"),
                                    model=ModelSpec(id="fake/passive"), scorer=ScorerSpec(metric="exact"),
                                    reasoning=ModelSpec(id="fake/inducer"), budget=Budget(max_trials=8, patience=8),
                                    seed=1))
    finally:
        unregister_fake("fake/passive")
        unregister_fake("fake/inducer")
    assert "passive voice" in r.best_prompt and r.best_test == 1.0 and r.significant
    assert (r.operators or {}).get("induce") == 1
