"""The architecture's seams, each exercised through its real path: a strategy from another installed package
(entry points) run by `reflexopt worker` in a second process on a shared study; a Task that fills two named
prompts, searched by the reflex strategy unchanged; the event bus; the one budget owner."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLES, FakeOpenAI, label_model, label_rows, names_labels, write_jsonl

from reflexopt.budget import Limits, RunBudget
from reflexopt.config import Budget, optimize_config
from reflexopt.data import Case
from reflexopt.errors import ConfigError
from reflexopt.events import EventBus, forward
from reflexopt.models import ChatResult, FunctionModel, Meter, ModelClient, register_fake, unregister_fake
from reflexopt.prompt import Prompt
from reflexopt.promptset import PromptSet

PLUGIN = '''
import os
import time

from reflexopt.promptset import PromptSet


class Probe:
    """Records candidates from whichever process runs it; the optimize process waits for a worker's."""

    name = "probe"
    distributed = True

    async def search(self, ctx):
        if os.environ.get("PROBE_ROLE") == "worker":
            made = 0
            while not ctx.stop_reason() and made < 6:
                base = ctx.baseline_prompts.primary
                await ctx.record(PromptSet.of(base.with_(text=base.text + f" Say positive or negative. ({made})")),
                                 operator="probe", reasoning="from a worker")
                made += 1
            return "worker done"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            mine = [t for t in ctx.search.records() if t.attrs.get("worker") not in (None, "", ctx.worker)]
            if len(mine) >= 2:
                return "saw the worker"
            time.sleep(0.2)
        return "no worker came"


class Solo:
    name = "solo"
    distributed = False

    async def search(self, ctx):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not os.path.exists(os.environ["SOLO_FLAG"]):
            time.sleep(0.1)
        return "solo done"
'''


def install_plugin(root: Path) -> Path:
    """A package installed the way pip installs one: its module and a dist-info with entry points."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "rx_probe_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = root / "rx_probe_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rx-probe-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[reflexopt.strategies]\nprobe = rx_probe_plugin:Probe\n"
                                           "solo = rx_probe_plugin:Solo\n")
    return root


def _env(tmp: Path, home: str, plugin: Path, **extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(plugin), os.environ.get("PYTHONPATH", "")]))
    return {**os.environ, "REFLEXOPT_HOME": str(tmp / home), "OPENAI_API_KEY": "sk-test-0000000000000000",
            "PYTHONPATH": path, **extra}


def _reply(req: dict[str, Any]) -> str:
    return label_model(req["messages"])  # type: ignore[arg-type]


def _coordinator(server: FakeOpenAI, tmp: Path, strategy: str, **env: str) -> tuple[Path, str, Any]:
    """The plugin installed, and `optimize --strategy STRATEGY` started on a shared SQLite study."""
    plugin = install_plugin(tmp / "site")
    data = write_jsonl(tmp / "d.jsonl", label_rows(40))
    (tmp / "p.md").write_text("Look at this.\n")
    server.responder = _reply
    storage = f"sqlite:///{tmp / 'shared.db'}"
    coord = subprocess.Popen(
        [sys.executable, "-m", "reflexopt", "optimize", str(data), str(tmp / "p.md"), "-m", "openai/t",
         "--api-base", server.url, "--metric", "contains", "--storage", storage, "--strategy", strategy,
         "--run-dir", str(tmp / "run"), "--json"],
        env=_env(tmp, "h0", plugin, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return plugin, storage, coord


def test_a_worker_runs_a_strategy_from_another_package(openai_server: FakeOpenAI, tmp_path: Path) -> None:
    plugin, storage, coord = _coordinator(openai_server, tmp_path, "probe")
    worker = subprocess.run([sys.executable, "-m", "reflexopt", "worker", "--storage", storage, "--wait", "60",
                             "--json"], env=_env(tmp_path, "h1", plugin, PROBE_ROLE="worker"),
                            capture_output=True, text=True, timeout=300)
    out, err = coord.communicate(timeout=300)
    assert coord.returncode == 0, err
    assert worker.returncode == 0, worker.stderr
    result = json.loads(out)
    assert result["stop_reason"] == "saw the worker"
    reports = json.loads(worker.stdout)
    assert reports and sum(r["trials"] for r in reports) >= 2
    cands = [json.loads(x) for x in (tmp_path / "run" / "candidates.jsonl").read_text().splitlines()]
    by_worker = [c for c in cands if c["operator"] == "probe"]
    assert len(by_worker) >= 2 and all(c["worker"] and c["n_val"] > 0 for c in by_worker)


def test_a_worker_refuses_a_strategy_that_cannot_share_a_study(openai_server: FakeOpenAI, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    plugin, storage, coord = _coordinator(openai_server, tmp_path, "solo", SOLO_FLAG=str(flag))
    try:
        worker = subprocess.run([sys.executable, "-m", "reflexopt", "worker", "--storage", storage, "--wait", "60"],
                                env=_env(tmp_path, "h1", plugin), capture_output=True, text=True, timeout=300)
    finally:
        flag.write_text("go")
    out, err = coord.communicate(timeout=300)
    assert coord.returncode == 0, err
    assert worker.returncode == 2
    lines = [x for x in worker.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "runs strategy 'solo', which cannot share a study" in lines[0], worker.stderr


def test_an_unknown_strategy_names_the_registered_ones() -> None:
    from reflexopt.strategies import get_strategy

    with pytest.raises(ConfigError) as e:
        get_strategy("nope")
    assert "gepa, mipro, reflex" in str(e.value)


# ------------------------------------------------------------------ a Task that fills two named prompts
class TwoStep:
    """A pipeline-like task: a `route` prompt picks what to look at, an `answer` prompt answers. It answers right
    when the answer prompt names the labels, and on the `bad` items only when the route prompt also names them (so
    the best candidate needs both prompts tuned)."""

    names = ("route", "answer")

    def __init__(self, client: ModelClient) -> None:
        self.client = client
        self.calls = 0

    @property
    def clients(self) -> tuple[ModelClient, ...]:
        return (self.client,)

    @property
    def concurrency(self) -> int:
        return 4

    async def run(self, prompts: PromptSet, case: Case) -> ChatResult:
        self.calls += 1
        route = await self.client.complete(prompts["route"].render(case))
        if not route.ok:
            return route
        answer = await self.client.complete(prompts["answer"].render(case))
        reads = names_labels(prompts["route"].to_markdown())
        if reads or "bad" not in case.input_text:
            return answer
        return ChatResult("?", answer.model, **answer.cost_fields())


def test_the_reflex_strategy_tunes_a_two_prompt_candidate_unchanged(tmp_path: Path) -> None:
    from reflexopt.evaluator import Evaluator
    from reflexopt.pool import Candidate, State, from_study
    from reflexopt.search import Search
    from reflexopt.strategies import SearchContext
    from reflexopt.strategies.reflex import ReflexStrategy

    register_fake("fake/two", FunctionModel(label_model))
    try:
        data = write_jsonl(tmp_path / "d.jsonl", label_rows(40))
        (tmp_path / "p.md").write_text("Look.\n")
        cfg = optimize_config(data, tmp_path / "p.md", model="fake/two", metric="contains", seed=1,
                              budget=Budget(max_trials=10, patience=20))
        start = PromptSet((("route", Prompt("Look.")), ("answer", Prompt("Look."))))
        ev = Evaluator(cfg, start)
        ev.connect()
        task = TwoStep(ev.task_client)
        ev.task = task  # the seam: pipeline mode swaps this, nothing else

        async def run() -> list[Candidate]:
            with Search(f"sqlite:///{tmp_path / 's.db'}", "two", seed=1) as search:
                base = Candidate("baseline", start)
                res, _ = await ev.evaluate(base, ev.val, "val")
                base = base.scored({r.case_id: r.score for r in res if r.score is not None}, State.COMPLETE)
                search.add_baseline(base.val_mean, {ev.index[k]: v for k, v in base.val.items()}, base.attrs())
                ctx = SearchContext(ev, search, base, 0.0)
                await ReflexStrategy().search(ctx)
                return from_study(search.records(), ev.val)

        pool = asyncio.run(run())
    finally:
        unregister_fake("fake/two")
    tried = [c for c in pool if c.id != "baseline"]
    assert {c.params.get("target") for c in tried} == {"route", "answer"}  # both prompts were tuned, in turn
    assert all(c.prompts.names == ("route", "answer") for c in pool)
    best = max((c for c in pool if c.state == "complete"), key=lambda c: c.val_mean)
    assert best.val_mean == 1.0 > pool[0].val_mean  # only a candidate with both prompts tuned gets here
    assert all(names_labels(best.prompts[n].to_markdown()) for n in ("route", "answer"))
    assert task.calls > 0
    assert PromptSet.parse(best.prompts.to_markdown()).key == best.prompts.key  # stored and read back as a set


def test_a_case_whose_task_failed_counts_0_on_val_as_on_test(tmp_path: Path) -> None:
    """A prompt that makes the task fail (its call, or the user's program) on the cases it would get wrong must
    not score as if those cases were not there; a prompt that fails on every case is FAILED, not 0."""
    from reflexopt.evaluator import Evaluator
    from reflexopt.pool import Candidate, State
    from reflexopt.search import Search
    from reflexopt.strategies import SearchContext

    def model(messages: list[dict[str, str]]) -> str:
        text = " ".join(m["content"] for m in messages)
        if "STRICT" in text and ("bad" in messages[-1]["content"] or "EVERY" in text):
            raise ValueError("the program could not parse the answer")
        return "positive"  # right on the good items only

    register_fake("fake/strict", FunctionModel(model))
    try:
        data = write_jsonl(tmp_path / "d.jsonl", label_rows(40))
        (tmp_path / "p.md").write_text("Say positive or negative: {input}\n")
        cfg = optimize_config(data, tmp_path / "p.md", model="fake/strict", metric="contains", seed=1,
                              budget=Budget(max_trials=5))
        start = PromptSet.of(Prompt("Say positive or negative: {input}"))
        ev = Evaluator(cfg, start)
        ev.connect()

        async def run() -> tuple[Candidate, Candidate, Candidate]:
            with Search(f"sqlite:///{tmp_path / 's.db'}", "strict", seed=1) as search:
                base = Candidate("baseline", start)
                res, _ = await ev.evaluate(base, ev.val, "val")
                from reflexopt.evaluate import case_scores

                base = base.scored(case_scores(res), State.COMPLETE)
                search.add_baseline(base.val_mean, {ev.index[k]: v for k, v in base.val.items()}, base.attrs())
                ctx = SearchContext(ev, search, base, 0.0)
                strict = await ctx.record(Prompt("STRICT. Say positive or negative: {input}"), operator="fix",
                                          reasoning="")
                broken = await ctx.record(Prompt("STRICT EVERY. Say positive or negative: {input}"),
                                          operator="fix", reasoning="")
                return base, strict, broken

        base, strict, broken = asyncio.run(run())
    finally:
        unregister_fake("fake/strict")
    good = sum(1 for c in ev.val if c.ideal == "positive")
    assert 0 < good < len(ev.val) and base.val_mean == good / len(ev.val)
    assert len(strict.val) == len(ev.val) and strict.val_mean == base.val_mean  # not 1.0 on the good items alone
    assert strict.state == State.COMPLETE
    assert broken.state == State.FAILED and not broken.val


def test_a_task_contract_holds_for_the_default_and_a_pipeline_task(tmp_path: Path) -> None:
    from reflexopt.evaluate import evaluate
    from reflexopt.models import get_client
    from reflexopt.scoring import make_scorer
    from reflexopt.task import PromptTask

    register_fake("fake/c", FunctionModel(label_model))
    register_fake("fake/down", FunctionModel(lambda m: ValueError("down")))
    try:
        cases = [Case(id=str(i), input=r["input"], ideal=r["ideal"]) for i, r in enumerate(label_rows(6))]
        named = PromptSet((("route", Prompt("Is the item positive or negative?")),
                           ("answer", Prompt("Say positive or negative."))))
        scorer, _ = make_scorer(optimize_config("x", "y", metric="contains").scorer, cases)
        for make, prompts in ((lambda c: PromptTask(c), PromptSet.of(Prompt("Say positive or negative."))),
                              (TwoStep, named)):
            ok = make(get_client(optimize_config("x", "y", model="fake/c").model))
            assert set(ok.names) == set(prompts.names) or ok.names == ("prompt",)
            rep = evaluate(cases, prompts, ok, scorer)
            assert rep.mean == 1.0 and all(r.error is None for r in rep.results)
            down = make(get_client(optimize_config("x", "y", model="fake/down").model))
            res = asyncio.run(down.run(prompts, cases[0]))  # never raises for a failed call
            assert not res.ok and res.error
            refused = make(get_client(optimize_config("x", "y", model="fake/c").model, cache=False))
            gate = RunBudget(1, None)
            gate.granted = 1  # spent
            for c in refused.clients:
                c.gate = gate
            res = asyncio.run(refused.run(prompts, cases[2]))
            assert res.budget_exhausted and not res.ok  # out of budget is a typed signal, not text
    finally:
        unregister_fake("fake/c")
        unregister_fake("fake/down")


# ------------------------------------------------------------------ events
def test_the_bus_fans_out_checks_shapes_and_detaches_a_broken_subscriber() -> None:
    a: list[tuple[str, dict[str, Any]]] = []
    b: list[tuple[str, dict[str, Any]]] = []

    def broken(kind: str, data: dict[str, Any]) -> None:
        raise RuntimeError("tracker down")

    bus = EventBus([lambda k, d: a.append((k, d))])
    bus.subscribe(broken, isolated=True)  # a plug-in tracker
    bus.subscribe(forward(lambda k, d: b.append((k, d)), model="m"))
    bus.emit("note", {"message": "hello"})
    assert a[0] == ("note", {"message": "hello"}) and b[0] == ("note", {"message": "hello", "model": "m"})
    assert any("tracker down" in d["message"] for k, d in a if k == "note")  # said once, then detached
    assert broken not in bus.subscribers
    with pytest.raises(ValueError, match="lacks"):
        bus.emit("trial", {"n": 1})  # a payload without its kind's keys is the emitter's bug
    core = EventBus([broken])  # a core subscriber (the run store) failing stops the emitter
    with pytest.raises(RuntimeError, match="tracker down"):
        core.emit("note", {"message": "x"})


def test_compare_and_batch_forward_their_runs_events(tmp_path: Path) -> None:
    from reflexopt.batch import run_batch
    from reflexopt.compare import compare
    from reflexopt.config import compare_config

    register_fake("fake/f", FunctionModel(label_model))
    try:
        data = write_jsonl(tmp_path / "d.jsonl", label_rows(40))
        (tmp_path / "p.md").write_text("Look.\n")
        seen: list[tuple[str, dict[str, Any]]] = []
        compare(compare_config(data, tmp_path / "p.md", ["fake/f"], metric="contains",
                               budget=Budget(max_trials=2)), on_event=lambda k, d: seen.append((k, d)))
        assert any(k == "trial" and d.get("model") == "fake/f" for k, d in seen)
        jobs = tmp_path / "jobs.yaml"
        jobs.write_text(f"jobs:\n  - name: j\n    dataset: {data}\n    prompt: {tmp_path / 'p.md'}\n"
                        "    model: fake/f\n    metric: contains\n    budget: {max_trials: 2}\n")
        seen.clear()
        run_batch(jobs, on_event=lambda k, d: seen.append((k, d)))
        assert any(k == "trial" and d.get("unit") == "j" for k, d in seen)
    finally:
        unregister_fake("fake/f")


# ------------------------------------------------------------------ the budget owner
def test_the_budget_answers_may_i_and_why_we_stopped() -> None:
    m = Meter()
    b = RunBudget(3, None, limits=Limits(max_time_s=None, trial_limit=4, patience=2, target=0.9))
    assert [b.allow(m) for _ in range(4)] == [True, True, True, False]  # the hard limit holds
    assert b.remaining() == 0 and b.unspent() == 0
    assert b.limit_reason(0.5, min_calls=1) == "budget"
    assert b.limit_reason(0.95, min_calls=1) == "target reached"
    fresh = RunBudget(10, None, limits=Limits(trial_limit=4, patience=2))
    fresh.set_reserve(4)
    assert fresh.remaining() == 6  # the verdict's reserve is kept back during the search
    assert fresh.limit_reason(0.5, min_calls=1) == "" and not fresh.exhausted()
    fresh.mark_exhausted()
    assert fresh.exhausted() and fresh.limit_reason(0.5, min_calls=1) == "budget"
    assert fresh.patience_spent(2) and not fresh.patience_spent(1)
    assert fresh.trials_spent(4) and not fresh.trials_spent(3)
    timed = RunBudget(None, None, limits=Limits(max_time_s=0.01), started=time.monotonic() - 1)
    assert timed.timed_out() and timed.limit_reason(0.0, min_calls=1) == "max time"
    cached = RunBudget(2, None)
    assert cached.first_ask("k") and not cached.first_ask("k")
    assert cached.charge_cached(m) and cached.charge_cached(m) and not cached.charge_cached(m)


def test_the_example_plugin_installs_with_pip_and_eval_scores_with_it(openai_server: FakeOpenAI,
                                                                      tmp_path: Path) -> None:
    """examples/plugin, installed by pip into a folder on the path, adds `--metric word-limit:N`."""
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site),
                          str(EXAMPLES / "plugin")], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr
    rows = [{"input": f"item {i}", "ideal": "x"} for i in range(6)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    (tmp_path / "p.md").write_text("Describe {input}.\n")
    openai_server.responder = lambda req: ("short reply" if int(req["messages"][-1]["content"].split()[-1][:-1]) % 3
                                           else "a much longer reply than three words")
    args = [sys.executable, "-m", "reflexopt", "eval", str(data), str(tmp_path / "p.md"), "-m", "openai/t",
            "--api-base", openai_server.url, "--metric", "word-limit:3", "--json"]
    r = subprocess.run(args, env=_env(tmp_path, "h", site), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["score"] == pytest.approx(4 / 6, abs=1e-3)  # items 0 and 3 answer at length
    r = subprocess.run(args, env=_env(tmp_path, "h2", tmp_path / "nothing"), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "unknown metric 'word-limit:3'" in r.stderr
