"""Run history and HTML reports, on runs made by optimize, compare and batch, finished or interrupted."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from html import escape
from pathlib import Path
from typing import Any

import pytest
from conftest import browse_offline, names_labels, write_jsonl

from reflexopt.compare import compare
from reflexopt.config import Budget, CompareConfig, DataSpec, ModelSpec, OptimizeConfig
from reflexopt.models import FunctionModel, register_fake, unregister_fake
from reflexopt.optimizer import optimize
from reflexopt.report import write_report
from reflexopt.runs import diff, list_runs, show

EVIL = "<script>alert('pwned')</script> & <b>bold</b>"


def task(messages: list[dict[str, str]]) -> str:
    import hashlib

    text = " ".join(m["content"] for m in messages)
    item = messages[-1]["content"]
    right = "positive" if "good" in item else "negative"
    if names_labels(text):
        # the rows carrying EVIL are always answered right once the prompt is fixed, so they show as fixed cases
        return right if EVIL in item or int(hashlib.md5(item.encode()).hexdigest(), 16) % 10 < 9 else "?"
    return "<script>document.title='x'</script> maybe"


@pytest.fixture
def run_files(tmp_path: Path) -> tuple[Path, Path]:
    rows = [{"input": f"{'good' if i % 2 else 'bad'} thing {i}", "ideal": "positive" if i % 2 else "negative"}
            for i in range(60)]
    for i in range(1, 60, 5):  # spread over train, val and test whatever the split
        rows[i]["input"] = ("good " if i % 2 else "bad ") + EVIL + f" {i}"
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    prompt = tmp_path / "p.md"
    prompt.write_text("Look <at> this & that.\n")
    register_fake("fake/task", FunctionModel(task))
    register_fake("fake/reasoner", FunctionModel(lambda m: "<prompt>Decide: {input}</prompt>"))
    yield data, prompt
    unregister_fake("fake/task")
    unregister_fake("fake/reasoner")


def _cfg(data: Path, prompt: Path, **kw: Any) -> OptimizeConfig:
    return OptimizeConfig(data=DataSpec(path=str(data)), prompt_path=str(prompt), model=ModelSpec(id="fake/task"),
                          reasoning=ModelSpec(id="fake/reasoner"), budget=Budget(max_trials=6, patience=6), **kw)


# A KeyboardInterrupt raised inside the fake model interrupts an async generator mid-step; when that generator
# is collected, Python reports "aclose(): asynchronous generator is already running". That is the simulated
# interrupt, not a product error (a real Ctrl-C ends the CLI process): collect it here, inside this test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_history_on_finished_interrupted_and_compare_runs(run_files: tuple[Path, Path]) -> None:
    data, prompt = run_files
    r1 = optimize(_cfg(data, prompt))
    r2 = optimize(_cfg(data, prompt, seed=1))
    calls = {"n": 0}

    def dying(messages: list[dict[str, str]]) -> str:
        calls["n"] += 1
        if calls["n"] > 30:
            raise KeyboardInterrupt
        return task(messages)

    register_fake("fake/dying", FunctionModel(dying))
    try:
        with pytest.raises(KeyboardInterrupt):
            optimize(_cfg(data, prompt).model_copy(update={"model": ModelSpec(id="fake/dying")}))
    finally:
        unregister_fake("fake/dying")
        gc.collect()
    for pid_file in Path(os.environ["REFLEXOPT_HOME"], "runs").glob("*/pid"):
        pid_file.write_text("999999")  # the interrupted run's process is gone (here: this test still runs)
    cmp = compare(CompareConfig(data=DataSpec(path=str(data)), prompt_path=str(prompt), tune=False,
                                models=(ModelSpec(id="fake/task"), ModelSpec(id="fake/reasoner"))))
    from reflexopt.batch import run_batch

    jobs = data.parent / "jobs.yaml"
    jobs.write_text(f"jobs:\n  - name: j\n    dataset: {data.name}\n    prompt: {prompt.name}\n"
                    "    model: fake/task\n    reasoning_model: fake/reasoner\n    budget: {max_trials: 2}\n")
    batch = run_batch(jobs)
    runs = {r.id: r for r in list_runs()}
    batch_run = next(r for r in runs.values() if r.path == Path(batch["jobs"][0]["run_dir"]))
    assert batch_run.status == "done" and show(str(batch_run.path))["summary"]["run_id"] == batch_run.id
    assert runs[r1.run_id].status == "done" and runs[r1.run_id].best == r1.best_test
    interrupted = [r for r in runs.values() if r.status == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0].calls and interrupted[0].kind == "optimize"
    assert runs[cmp.compare_id].kind == "compare" and runs[cmp.compare_id].status == "done"
    shown = show(r1.run_id[:17] if sum(1 for k in runs if k.startswith(r1.run_id[:17])) == 1 else r1.run_id)
    assert shown["summary"]["run_id"] == r1.run_id and shown["trajectory"][0]["id"] == "baseline"
    assert show(interrupted[0].id)["summary"] is None
    d = diff(r1.run_id, r2.run_id)
    assert d["common_test_cases"] > 0 and isinstance(d["changed_cases"], list)
    for path in (Path(r1.run_dir), interrupted[0].path, runs[cmp.compare_id].path):
        html = write_report(path).read_text()
        assert "<script" not in html and html.startswith("<!doctype html>")


def test_report_escapes_data(run_files: tuple[Path, Path]) -> None:
    data, prompt = run_files
    r = optimize(_cfg(data, prompt))
    html = write_report(Path(r.run_dir)).read_text()
    assert "<script" not in html.lower().replace("&lt;script", "")
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in html
    assert "<b>bold</b>" not in html and "&lt;at&gt;" in html
    for section in ("Score trajectory", "Baseline vs best on test", "Failure categories", "Prompt diff",
                    "Lineage of the best prompt", "Calls, tokens, cost and time"):
        assert section in html
    assert r.test_labels is not None and f"{r.test_labels['best']['macro_f1']:.3f}" in html  # macro-F1 KPI
    assert "macro-F1 (test)" in html
    from reflexopt.pool import steps_text

    assert r.lineage and escape(steps_text(r.lineage)) in html  # the steps to the best, as the summary says them


def test_report_opens_offline_in_chromium(run_files: tuple[Path, Path], tmp_path: Path) -> None:
    data, prompt = run_files
    r = optimize(_cfg(data, prompt))
    report = write_report(Path(r.run_dir), tmp_path / "report.html")
    seen = browse_offline(report)
    assert seen["requests"] == [report.as_uri()], seen["requests"]
    assert seen["problems"] == []
    assert "<script>alert('pwned')</script>" in seen["text"]  # shown as text, not run
    assert seen["title"].startswith("reflexopt run")
    assert seen["nested"] == 0 and seen["points"] == r.trials + 1  # every trial and the baseline is drawn


def test_cli_runs_and_report(run_files: tuple[Path, Path], tmp_path: Path) -> None:
    data, prompt = run_files
    r = optimize(_cfg(data, prompt))
    env = {**os.environ}
    out = subprocess.run([sys.executable, "-m", "reflexopt", "runs", "list", "--json"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0 and r.run_id in {x["id"] for x in json.loads(out.stdout)}
    shown = subprocess.run([sys.executable, "-m", "reflexopt", "runs", "show", r.run_id], capture_output=True,
                           text=True, env=env, timeout=120)
    assert shown.returncode == 0 and "trajectory" in shown.stdout and "best prompt" in shown.stdout
    rep = subprocess.run([sys.executable, "-m", "reflexopt", "report", r.run_id, "-o", str(tmp_path / "r.html")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert rep.returncode == 0 and (tmp_path / "r.html").exists()
    bad = subprocess.run([sys.executable, "-m", "reflexopt", "runs", "show", "no-such-run"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "no run 'no-such-run'" in bad.stderr


def test_trajectory_draws_trials_in_order_and_cost_variants_last() -> None:
    """--objective cost's cheaper variants are recorded before the search's trials are exported; the chart
    still reads baseline, trials by number, then the variants."""
    from reflexopt.report import trajectory_svg

    cands = [{"id": "t2.d1", "trial": None, "val_mean": 0.4, "state": "complete", "operator": "trim"},
             {"id": "t2", "trial": 2, "val_mean": 0.5, "state": "complete", "operator": "demos"},
             {"id": "baseline", "trial": None, "val_mean": 0.1, "state": "complete", "operator": "baseline"},
             {"id": "t1", "trial": 1, "val_mean": 0.2, "state": "pruned", "operator": "cue"}]
    svg = trajectory_svg(cands, ["baseline", "t2"])
    at = [svg.index(f">{i}<") for i in ("baseline", "t1", "t2", "t2.d1")]
    assert at == sorted(at)


def test_labels_of_points_at_one_place_do_not_print_over_each_other() -> None:
    """Two candidates at the same cost and score (a trial that kept the baseline's text, say) get their labels
    stacked; a point elsewhere keeps its label by its circle."""
    import re

    from reflexopt.report import points_svg

    svg = points_svg([("baseline", 100.0, 0.5, False), ("t4", 100.0, 0.5, True), ("t7", 10.0, 0.9, False)],
                     "prompt tokens per request", "val score")
    ys = {label: float(y) for y, label in re.findall(r"<text x=[\d.]+ y=([\d.]+) font-size=12>([^<]+)</text>", svg)}
    assert abs(ys["baseline"] - ys["t4"]) >= 13
    circle_t7 = float(re.findall(r"<title>t7: [\d.]+</title><circle cx=[\d.]+ cy=([\d.]+)", svg)[0])
    assert ys["t7"] == pytest.approx(circle_t7 - 8)


def test_a_dspy_runs_search_time_is_not_counted_as_its_baseline() -> None:
    """A DSPy strategy emits its one trial when it ends: the search began when the baseline was scored. The
    report gave such a run's whole search to the baseline (2.7 min) and 0.0 min to the search."""
    from reflexopt.report import _phases

    events = [{"event": "start", "t": 0.0}, {"event": "baseline", "t": 60.0}, {"event": "trial", "t": 600.0},
              {"event": "stop", "t": 601.0}, {"event": "done", "t": 661.0}]
    assert _phases(events) == {"baseline": 60.0, "search": 541.0, "final test": 60.0}
    older = [e for e in events if e["event"] != "baseline"]  # runs recorded before the baseline event
    assert _phases(older)["search"] == 1.0
