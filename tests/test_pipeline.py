"""Pipeline mode: the user's own program is the task. Each test runs a real app file in reflexopt's worker
processes, whose model calls go through the openai SDK to reflexopt's loopback endpoint (fake models behind it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeOpenAI, label_model, label_rows, names_labels, write_jsonl

from reflexopt.config import Budget, optimize_config, pipeline_spec
from reflexopt.errors import ConfigError
from reflexopt.models import FunctionModel, register_fake, unregister_fake
from reflexopt.optimizer import optimize

APP = '''
import time
from openai import OpenAI

client = OpenAI(max_retries=0)


def ask(system, user):
    r = client.chat.completions.create(model="whatever", temperature=0, max_tokens=16,
                                       messages=[{"role": "system", "content": system},
                                                 {"role": "user", "content": user}])
    return r.choices[0].message.content or ""


def run(item, prompts):
    if "explode" in item:
        raise ValueError("the app broke on this one")
    if "sleep" in item:
        time.sleep(30)
    gist = ask(prompts["extract"], item)
    import reflexopt
    answer = ask(reflexopt.current_prompt("answer"), item)  # read without threading prompts through
    # the extract step matters too: the answer counts only when both prompts name the labels
    ok = all(w in prompts["extract"] for w in ("positive", "negative")) or "bad" not in item
    return (answer if ok else "?"), [{"step": "extract", "output": gist}, {"step": "answer", "output": answer}]
'''


@pytest.fixture
def app(tmp_path: Path) -> Any:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "extract.md").write_text("Read this.\n")
    (tmp_path / "answer.md").write_text("Look.\n")
    model = FunctionModel(label_model)
    register_fake("fake/pipe", model)
    yield tmp_path, model
    unregister_fake("fake/pipe")


def _cfg(tmp: Path, rows: list[dict[str, Any]], **kw: Any) -> Any:
    data = write_jsonl(tmp / "d.jsonl", rows)
    spec = pipeline_spec(f"{tmp / 'app.py'}:run", [f"extract={tmp / 'extract.md'}", f"answer={tmp / 'answer.md'}"],
                         timeout_s=kw.pop("timeout_s", None))
    return optimize_config(data, tmp / "extract.md", model="fake/pipe", metric="contains", pipeline=spec,
                           **{"budget": Budget(max_trials=12, patience=12, max_calls=2000), **kw})


def test_two_prompts_are_tuned_and_their_calls_are_counted_cached_and_capped(app: Any, tmp_path: Path) -> None:
    tmp, model = app
    cfg = _cfg(tmp, label_rows(40), output=str(tmp / "tuned"))
    r = optimize(cfg, run_dir=tmp / "run")
    assert r.best_test > r.baseline_test + 0.4 and r.significant
    cands = [json.loads(x) for x in (tmp / "run" / "candidates.jsonl").read_text().splitlines()]
    assert {c["params"].get("target") for c in cands if c["id"] != "baseline"} == {"extract", "answer"}
    accepted = [c for c in cands if c["id"] in r.accepted_path[1:]]
    assert {c["params"]["target"] for c in accepted} == {"extract", "answer"}  # the lineage says which changed
    assert all(names_labels((tmp / "tuned" / f"{n}.md").read_text()) for n in ("extract", "answer"))
    # every call the app made went through the endpoint: counted in the summary, within the budget
    assert r.model_calls == len(model.calls) and 0 < r.usage["budget_calls_used"] <= 2000
    evals = [json.loads(x) for x in (tmp / "run" / "evals.jsonl").read_text().splitlines()]
    assert all(e["calls"] in (0, 1, 2) for e in evals) and any(e["calls"] == 2 for e in evals)  # two steps
    assert all(len(e["trace"]) == 2 for e in evals if not e["error"])  # the app's trace is kept per case
    served = len(model.calls)
    again = optimize(cfg.model_copy(update={"output": None}), run_dir=tmp / "again")
    assert again.model_calls == 0 and len(model.calls) == served  # a re-run pays nothing
    assert again.best_prompt == r.best_prompt


def test_the_budget_caps_the_pipelines_own_calls(app: Any) -> None:
    tmp, model = app
    r = optimize(_cfg(tmp, label_rows(40), budget=Budget(max_calls=150, max_trials=50)), run_dir=tmp / "run")
    assert len(model.calls) <= 150 and r.usage["budget_calls_used"] <= 150


def test_a_crash_or_a_timeout_is_that_cases_error(app: Any) -> None:
    tmp, _ = app
    rows = label_rows(30)
    rows[3]["input"] = "good explode item"
    rows[5]["input"] = "bad sleep item"
    r = optimize(_cfg(tmp, rows, timeout_s=2.0, budget=Budget(max_trials=2)), run_dir=tmp / "run")
    evals = [json.loads(x) for x in (tmp / "run" / "evals.jsonl").read_text().splitlines()]
    errors = {e["input"]: e["error"] for e in evals if e["error"]}
    assert any("ValueError: the app broke on this one" in v and "Traceback" in v
               for k, v in errors.items() if "explode" in k)
    assert any("ran past its 2 s limit" in v for k, v in errors.items() if "sleep" in k)
    assert r.trials == 2  # the run went on


def _cli(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REFLEXOPT_HOME": str(tmp / "home"), "OPENAI_API_KEY": "sk-test-0000000000000000"}
    return subprocess.run([sys.executable, "-m", "reflexopt", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_a_pipeline_that_bypasses_the_endpoint_is_reported(openai_server: FakeOpenAI, tmp_path: Path) -> None:
    """The app calls a provider itself (here a loopback server standing in for one): those calls would escape
    the budget, the cache and the cost report, so each such case is an error naming the address, and a run
    where every case does it stops with that message."""
    openai_server.responder = lambda req: "positive"
    (tmp_path / "app.py").write_text(
        "from openai import OpenAI\n"
        f"direct = OpenAI(base_url={openai_server.url!r}, api_key='sk-own', max_retries=0)\n"
        "def run(item, prompts):\n"
        "    r = direct.chat.completions.create(model='m', messages=[{'role': 'user', 'content': prompts['p']}])\n"
        "    return r.choices[0].message.content\n")
    (tmp_path / "p.md").write_text("Say positive or negative.\n")
    data = write_jsonl(tmp_path / "d.jsonl", label_rows(20))
    served = _cli(["optimize", str(data), "--pipeline", f"{tmp_path / 'app.py'}:run", "--prompt",
                   f"p={tmp_path / 'p.md'}", "-m", "openai/x", "--api-base", "http://127.0.0.1:9/v1", "--metric",
                   "contains", "--max-trials", "2"], tmp_path)
    assert served.returncode == 2, served.stderr
    port = openai_server.url.split(":")[2].split("/")[0]
    assert f"connected to 127.0.0.1:{port} directly, not through reflexopt's endpoint" in served.stderr
    assert openai_server.requests  # the app did reach it: reported, not silently uncounted


@pytest.mark.parametrize("app_text, prompts, expect", [
    ("def other(a, b):\n    return a\n", "p", "has no function 'run'"),
    ("def run(item):\n    return item\n", "p", "cannot be called as run(input, prompts)"),
    ("import not_a_module_here\n", "p", "importing app.py failed: ModuleNotFoundError"),
    ("def run(item, prompts):\n    return 'positive ' + prompts['p']\n", "p,q", "never read prompt 'q'"),
])
def test_bad_pipelines_are_one_line_with_the_fix(tmp_path: Path, app_text: str, prompts: str, expect: str) -> None:
    (tmp_path / "app.py").write_text(app_text)
    args = []
    for name in prompts.split(","):
        (tmp_path / f"{name}.md").write_text("Say positive or negative.\n")
        args += ["--prompt", f"{name}={tmp_path / f'{name}.md'}"]
    register_fake("fake/x", FunctionModel(label_model))
    data = write_jsonl(tmp_path / "d.jsonl", label_rows(20))
    try:
        from reflexopt.config import optimize_config as oc

        cfg = oc(data, tmp_path / f"{prompts.split(',')[0]}.md", model="fake/x", metric="contains",
                 budget=Budget(max_trials=1),
                 pipeline=pipeline_spec(f"{tmp_path / 'app.py'}:run", args[1::2]))
        with pytest.raises(ConfigError, match=expect.replace("(", r"\(").replace(")", r"\)")) as e:
            optimize(cfg, run_dir=tmp_path / "run")
        assert "\n" not in str(e.value) and "fix:" in str(e.value)
    finally:
        unregister_fake("fake/x")


def test_strategies_and_workers_that_cannot_run_a_pipeline_say_so(app: Any, tmp_path: Path) -> None:
    tmp, _ = app
    with pytest.raises(ConfigError, match="'mipro' drives the model itself and cannot run a pipeline"):
        optimize(_cfg(tmp, label_rows(20), strategy="mipro"), run_dir=tmp / "run")
    cli = _cli(["optimize", str(tmp / "d.jsonl"), str(tmp / "answer.md"), "--pipeline", f"{tmp / 'app.py'}:run",
                "--prompt", f"answer={tmp / 'answer.md'}"], tmp)
    assert cli.returncode == 2 and "with --pipeline the prompts are given as --prompt NAME=FILE" in cli.stderr


def test_compare_runs_one_pipeline_on_two_models_each_with_its_own_prompts(app: Any) -> None:
    from reflexopt.compare import compare
    from reflexopt.config import compare_config

    tmp, strong = app
    weak = FunctionModel(lambda m: "positive")  # a model that always says the same label
    register_fake("fake/weak", weak)
    try:
        data = write_jsonl(tmp / "d.jsonl", label_rows(40))
        spec = pipeline_spec(f"{tmp / 'app.py'}:run", [f"extract={tmp / 'extract.md'}", f"answer={tmp / 'answer.md'}"])
        res = compare(compare_config(data, tmp / "extract.md", ["fake/pipe", "fake/weak"], metric="contains",
                                     budget=Budget(max_trials=12, patience=12), pipeline=spec, parallel=1))
    finally:
        unregister_fake("fake/weak")
    rows = {r.model: r for r in res.rows}
    assert strong.calls and weak.calls  # the endpoint served each model under test, whatever the app asked for
    assert rows["fake/pipe"].tuned == 1.0 and rows["fake/weak"].tuned is not None and rows["fake/weak"].tuned < 0.7
    assert all(set(json.loads(r.tuned_prompt or "{}")) == {"extract", "answer"} for r in res.rows
               if r.tuned_prompt and r.tuned_prompt.startswith("{"))
    assert res.recommendation == "fake/pipe"
    with pytest.raises(ConfigError, match="--no-tune and --transfer score a single prompt file"):
        compare_config(data, tmp / "extract.md", ["fake/pipe"], pipeline=spec, tune=False)


def test_a_worker_refuses_a_pipeline_run_in_one_line(app: Any) -> None:
    from reflexopt import worker

    tmp, _ = app
    cfg = _cfg(tmp, label_rows(20))
    attrs = {"reflexopt_config": cfg.public(), "baseline_prompt": "x", "status": "running"}
    with pytest.raises(ConfigError, match="runs a pipeline .*; workers do not run pipelines"):
        import asyncio

        asyncio.run(worker._work_on("s", attrs, f"sqlite:///{tmp / 's.db'}", lambda k, d: None))


def test_a_pipeline_run_resumes_and_pays_nothing_twice(app: Any) -> None:
    tmp, model = app
    cfg = _cfg(tmp, label_rows(40), budget=Budget(max_trials=3, patience=12))
    first = optimize(cfg, run_dir=tmp / "run")
    served = len(model.calls)
    from reflexopt.optimizer import Optimizer

    more = Optimizer(cfg, run_dir=tmp / "run", changes={"budget": {"max_trials": 6}}).run()
    assert more.trials == 6 and more.run_id == first.run_id
    # the resumed run rebuilt the prompt sets from the study and paid only for its new trials' cases
    assert len(model.calls) - served == more.model_calls
    cands = [json.loads(x) for x in (tmp / "run" / "candidates.jsonl").read_text().splitlines()]
    assert {c["params"].get("target") for c in cands if c["id"] not in ("baseline",)} == {"extract", "answer"}


def test_the_reasoner_sees_the_pipelines_steps() -> None:
    from reflexopt.diagnose import format_cases
    from reflexopt.evaluate import CaseResult

    r = CaseResult(case_id="1", input="bad item", output="?", ideal="negative", score=0.0, passed=False,
                   trace=[{"step": "extract", "output": "lost the point"}, {"step": "answer", "output": "?"}])
    text = format_cases([r])
    assert 'Steps: [{"step": "extract", "output": "lost the point"}' in text


def test_the_verdict_reserve_covers_a_pipelines_calls_per_case(app: Any) -> None:
    """The budget keeps calls back for scoring baseline and best on test. A pipeline makes two calls per case;
    with a reserve sized for one, a budget-bound run lost test cases at the verdict."""
    tmp, _ = app
    optimize(_cfg(tmp, label_rows(40), budget=Budget(max_calls=120, max_trials=50)), run_dir=tmp / "run")
    evals = [json.loads(x) for x in (tmp / "run" / "evals.jsonl").read_text().splitlines()]
    by_key: dict[str, set[str]] = {}
    for e in evals:
        if e["split"] == "test" and e["error"] is None:
            by_key.setdefault(e["key"], set()).add(e["case_id"])
    every = set().union(*by_key.values())
    assert len(every) == 14 and all(ids == every for ids in by_key.values())  # both prompts, every test case


def test_the_pipeline_task_meets_the_task_contract(app: Any) -> None:
    """The Task contract (tests/test_seams.py) on the real pipeline task: a result, never an exception, for a
    failed call; a refused call comes back as the typed budget signal."""
    from reflexopt.budget import RunBudget
    from reflexopt.data import Case
    from reflexopt.models import get_client
    from reflexopt.pipeline import PipelineTask
    from reflexopt.prompt import Prompt
    from reflexopt.promptset import PromptSet

    tmp, _ = app
    spec = _cfg(tmp, label_rows(4)).pipeline
    named = PromptSet((("extract", Prompt("positive or negative?")), ("answer", Prompt("positive or negative?"))))
    register_fake("fake/down", FunctionModel(lambda m: ValueError("down")))

    async def one(model: str, gate: RunBudget | None = None) -> Any:
        client = get_client(optimize_config("x", "y", model=model).model, cache=False)
        client.gate = gate
        task = PipelineTask(spec, client)
        try:
            return await task.run(named, Case(id="1", input="good item 1", ideal="positive"))
        finally:
            await task.aclose()

    import asyncio

    try:
        ok = asyncio.run(one("fake/pipe"))
        assert ok.ok and ok.text == "positive" and ok.paid_calls == 2 and task_names(spec) == ("extract", "answer")
        down = asyncio.run(one("fake/down"))
        assert not down.ok and "the pipeline raised" in (down.error or "")
        spent = RunBudget(1, None)
        spent.granted = 1
        refused = asyncio.run(one("fake/pipe", spent))
        assert refused.budget_exhausted and not refused.ok
    finally:
        unregister_fake("fake/down")


def task_names(spec: Any) -> tuple[str, ...]:
    return tuple(n for n, _ in spec.prompts)


def test_eval_runs_the_pipeline_and_checks_a_prompt_change_against_the_old_version(app: Any) -> None:
    from reflexopt.config import eval_config
    from reflexopt.eval_run import eval_prompt

    tmp, model = app
    data = write_jsonl(tmp / "d.jsonl", label_rows(20))
    (tmp / "extract2.md").write_text("Say if it is positive or negative.\n")
    (tmp / "answer2.md").write_text("Answer positive or negative.\n")
    new = [f"extract={tmp / 'extract2.md'}", f"answer={tmp / 'answer2.md'}"]
    spec = pipeline_spec(f"{tmp / 'app.py'}:run", new)
    old = [f"extract={tmp / 'extract.md'}", f"answer={tmp / 'answer.md'}"]
    rep = eval_prompt(eval_config(data, None, model="fake/pipe", metric="contains", pipeline=spec, against=old))
    s = rep.summary()
    assert s["score"] == 1.0 and s["n_cases"] == 20 and all(len(r.trace) == 2 for r in rep.results)
    a = s["against"]
    assert (a["old_score"], a["verdict"], a["better_cases"]) == (0.0, "better", 20) and s["gate"]["passed"]
    assert a["prompt"] == f"extract={tmp / 'extract.md'}, answer={tmp / 'answer.md'}"
    assert json.loads(rep.prompt_text)["extract"].startswith("Say if it is")
    assert json.loads(rep.against_text or "{}")["answer"].startswith("Look.")
    assert s["model_calls"] == len(model.calls) == 80  # two steps per case, both versions
    # only the answer prompt's old version: the extract prompt is the new one on both sides
    one = eval_prompt(eval_config(data, None, model="fake/pipe", metric="contains", pipeline=spec,
                                  against=[f"answer={tmp / 'answer.md'}"])).summary()["against"]
    assert one["old_score"] == 0.0 and one["worse_cases"] == 0 and len(model.calls) == 80  # each step was cached
    # the old version scored as the new one: significantly worse, the gate fails
    back = eval_prompt(eval_config(data, None, model="fake/pipe", metric="contains",
                                   pipeline=pipeline_spec(f"{tmp / 'app.py'}:run", old),
                                   against=new)).summary()
    assert back["against"]["verdict"] == "worse" and not back["gate"]["passed"]
    notes: list[str] = []
    eval_prompt(eval_config(data, None, model="fake/pipe", metric="contains", pipeline=pipeline_spec(
        f"{tmp / 'app.py'}:run", [*new, f"unused={tmp / 'answer.md'}"])), on_note=notes.append)
    assert any("the pipeline never read prompt 'unused' on 20 cases" in n for n in notes)
    for bad, says in ((["nope=x.md"], "not NAME=FILE for a prompt the pipeline is given"),
                      ([f"answer={tmp / 'a.md'}", f"answer={tmp / 'b.md'}"], "names prompt 'answer' twice")):
        with pytest.raises(ConfigError, match=says):
            eval_config(data, None, model="fake/pipe", pipeline=spec, against=bad)
    with pytest.raises(ConfigError, match="with --pipeline the prompts are given as --prompt"):
        eval_config(data, tmp / "answer.md", pipeline=spec)
