"""Experiment trackers through the real path: `optimize/compare/batch --track mlflow` into a real local MLflow
store read back with MLflow's own client, `--track wandb` in W&B's offline mode read back from its run file.
Secrets (canary keys) reach neither; a resume continues the same tracker run; problems are one line before any
model call; a tracker lost part-way is detached with one note and the run goes on."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeOpenAI, free_port, label_model, label_rows, require, write_jsonl

# reading the stores back goes through MLflow's client in this process: its dependencies' deprecations are theirs
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

require("mlflow", "the MLflow tracker is tested on a real local store")
require("wandb", "the W&B tracker is tested in W&B's offline mode")

CANARY = "sk-canary-7f3a9c1e5b2d4f6a8c0e"
CANARY2 = "canary-secret-b81d20e4a9"


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "WANDB_"))}
    return {**env, "REFLEXOPT_HOME": str(tmp / "home"), "OPENAI_API_KEY": CANARY, "ANTHROPIC_API_KEY": CANARY2,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
            **extra}


def _run(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reflexopt", *args], capture_output=True, text=True, timeout=300,
                          cwd=tmp, env=_env(tmp, **env))


@pytest.fixture
def task(openai_server: FakeOpenAI, tmp_path: Path) -> list[str]:
    openai_server.responder = lambda req: label_model(req["messages"])
    write_jsonl(tmp_path / "d.jsonl", label_rows(30))
    (tmp_path / "p.md").write_text("Look at this: {input}\n")
    return [str(tmp_path / "d.jsonl"), str(tmp_path / "p.md"), "--api-base", openai_server.url,
            "--metric", "contains"]


def _client(tmp: Path) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")


def _runs(tmp: Path, experiment: str = "reflexopt") -> list[Any]:
    c = _client(tmp)
    exp = c.get_experiment_by_name(experiment)
    assert exp is not None, "no experiment was created"
    return list(c.search_runs([exp.experiment_id]))


def _no_canary(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            assert CANARY.encode() not in data and CANARY2.encode() not in data, f"a secret reached {p}"


def test_mlflow_logs_params_trial_metrics_verdict_artifacts_and_resumes_the_same_run(task: list[str],
                                                                                       tmp_path: Path) -> None:
    r = _run(tmp_path, "optimize", *task, "-m", "openai/t", "--max-trials", "2", "--track", "mlflow",
             "--track-experiment", "team-prompts", "--register-prompt", "sentiment", "--json")
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    said = r.stderr.replace(str(tmp_path), "").lower()
    assert "mlflow" not in said and "warning" not in said, r.stderr  # nothing of MLflow's leaks out
    (run,) = _runs(tmp_path, "team-prompts")
    c = _client(tmp_path)
    assert run.info.status == "FINISHED" and run.info.run_name == first["run_id"]
    assert run.data.params["model.id"] == "openai/t" and run.data.params["budget.max_trials"] == "2"
    assert run.data.params["scorer.metric"] == "contains"
    assert [m.step for m in c.get_metric_history(run.info.run_id, "val")] == [0, 1, 2]
    assert run.data.metrics["best_test"] == first["best_test"] and run.data.metrics["p_value"] == first["p_value"]
    assert run.data.metrics["test_gain_ci95_low"] == first["delta_ci95"][0]
    assert run.data.tags["reflexopt.verdict"] == ("significant gain" if first["significant"]
                                                  else "no significant gain")
    from reflexopt.pool import steps_text

    # the steps that made the returned prompt, as the terminal summary says them (the fake's run finds one)
    assert first["lineage"] and run.data.tags["reflexopt.steps_to_best"] == steps_text(first["lineage"])
    names = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"best.md", "report.html", "evals.jsonl", "summary.json"} <= names
    best = Path(c.download_artifacts(run.info.run_id, "best.md", str(tmp_path / "dl"))).read_text()
    assert best == Path(first["best_prompt_path"]).read_text()
    assert run.data.tags["mlflow.note.content"].startswith(f"test {first['baseline_test']:.3f} -> ")
    # the registry holds the tuned prompt as version 1, linked to the run
    assert run.data.tags["reflexopt.registered_prompt"] == "prompts:/sentiment/1"
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert mlflow.genai.load_prompt("prompts:/sentiment/1").template == best

    # a resume continues the same MLflow run: the new trials land on it
    r = _run(tmp_path, "optimize", "--resume", first["run_id"], "--max-trials", "4", "--json")
    assert r.returncode == 0, r.stderr
    (again,) = _runs(tmp_path, "team-prompts")
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert sorted({m.step for m in c.get_metric_history(run.info.run_id, "val")}) == [0, 1, 2, 3, 4]
    assert again.data.tags["reflexopt.registered_prompt"] == "prompts:/sentiment/2"
    # no key reached the store (params, tags, metrics, artifacts)
    _no_canary(tmp_path / "mlruns")
    assert CANARY.encode() not in (tmp_path / "mlflow.db").read_bytes()
    assert CANARY2.encode() not in (tmp_path / "mlflow.db").read_bytes()


def test_compare_and_batch_log_a_parent_with_a_nested_run_each(task: list[str], openai_server: FakeOpenAI,
                                                                tmp_path: Path) -> None:
    r = _run(tmp_path, "compare", *task, "-m", "openai/a", "-m", "openai/b", "--max-trials", "1",
             "--track", "mlflow", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    runs = _runs(tmp_path)
    parent = next(x for x in runs if x.data.tags.get("reflexopt.kind") == "compare")
    children = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.data.tags["reflexopt.compare_id"] == result["compare_id"]
    assert sorted(x.data.tags["reflexopt.model"] for x in children) == ["openai/a", "openai/b"]
    assert all(x.info.status == "FINISHED" and "tuned" in x.data.metrics for x in children)
    assert {"compare.json", "report.html"} <= {a.path for a in _client(tmp_path).list_artifacts(parent.info.run_id)}

    (tmp_path / "jobs.yaml").write_text(
        f"defaults:\n  model: openai/test\n  api_base: {openai_server.url}\n  metric: contains\n"
        f"  budget: {{max_trials: 1}}\njobs:\n  - name: one\n    dataset: d.jsonl\n    prompt: p.md\n"
        "  - name: two\n    dataset: d.jsonl\n    prompt: p.md\n    seed: 1\n")
    r = _run(tmp_path, "batch", str(tmp_path / "jobs.yaml"), "--track", "mlflow", "--json")
    assert r.returncode == 0, r.stderr
    runs = _runs(tmp_path)
    parent = next(x for x in runs if x.data.tags.get("reflexopt.kind") == "batch")
    jobs = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(jobs) == 2 and all(x.info.status == "FINISHED" and "best_test" in x.data.metrics for x in jobs)
    assert parent.info.status == "FINISHED" and parent.data.tags["reflexopt.complete"] == "True"


def _wandb_records(path: Path) -> list[Any]:
    """The records of a W&B offline run file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, out, buf, pos = path.read_bytes(), [], b"", 7
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if n == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # a full record, or the last piece of one
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def test_eval_logs_its_score_the_change_against_the_old_prompt_and_the_gate(task: list[str],
                                                                            tmp_path: Path) -> None:
    """`eval --against --track mlflow`: one MLflow run with the settings, the score, the change and its paired
    test, the gate's outcome, and the scored cases and both prompts as artifacts; in W&B offline, the same
    figures in the run's summary."""
    data, vague = task[0], task[1]
    named = tmp_path / "named.md"
    named.write_text("Answer positive or negative: {input}\n")
    r = _run(tmp_path, "eval", data, vague, *task[2:], "-m", "openai/t", "--against", str(named), "--track", "mlflow",
             "--track-experiment", "ci", "--json")
    assert r.returncode == 1, r.stderr  # the vague prompt is worse than the one it would replace
    s = json.loads(r.stdout)
    assert "mlflow" not in r.stderr.replace(str(tmp_path), "").lower(), r.stderr
    (run,) = _runs(tmp_path, "ci")
    assert run.info.status == "FINISHED" and run.info.run_name == "eval p.md on d.jsonl"
    assert run.data.params["model.id"] == "openai/t"
    assert json.loads(run.data.params["against"]) == [["prompt", str(named)]]
    m = run.data.metrics
    assert m["score"] == s["score"] == 0 and m["against_score"] == s["against"]["old_score"] == 1
    assert m["change"] == -1 and m["change_p_value"] == s["against"]["p_value"] and m["cases_worse"] == 30
    assert m["model_calls"] == 60 and m["macro_f1"] == s["labels"]["macro_f1"]
    assert run.data.tags["reflexopt.kind"] == "eval" and run.data.tags["reflexopt.change"] == "worse"
    assert run.data.tags["reflexopt.gate"].startswith("failed: significantly worse than")
    assert run.data.tags["mlflow.note.content"].startswith("score 0.000 on 30 of 30 cases; against ")
    c = _client(tmp_path)
    assert {a.path for a in c.list_artifacts(run.info.run_id)} == {"cases.jsonl", "summary.json", "prompt.md",
                                                                   "against.md"}
    got = Path(c.download_artifacts(run.info.run_id, "cases.jsonl", str(tmp_path / "dl"))).read_text()
    assert [json.loads(x)["case_id"] for x in got.splitlines()] == [str(i) for i in range(30)]
    _no_canary(tmp_path / "mlruns")
    assert CANARY.encode() not in (tmp_path / "mlflow.db").read_bytes()
    r = _run(tmp_path, "eval", data, vague, str(named), *task[2:], "-m", "openai/t", "--track", "mlflow",
             "--track-experiment", "several")  # two prompts: both prompts' text, and every prompt's cases
    assert r.returncode == 0, r.stderr
    (run,) = _runs(tmp_path, "several")
    assert {a.path for a in c.list_artifacts(run.info.run_id)} == {"cases.jsonl", "summary.json", "prompt.md",
                                                                   "prompt-2.md"}
    got = Path(c.download_artifacts(run.info.run_id, "prompt-2.md", str(tmp_path / "dl2"))).read_text()
    assert got.strip() == named.read_text().strip()
    got = Path(c.download_artifacts(run.info.run_id, "cases.jsonl", str(tmp_path / "dl2"))).read_text()
    assert [json.loads(x)["prompt"] for x in got.splitlines()] == [vague] * 30 + [str(named)] * 30

    w = _run(tmp_path, "eval", data, str(named), *task[2:], "-m", "openai/t", "--track", "wandb",
             "--fail-under", "0.9", WANDB_MODE="offline", WANDB_DIR=str(tmp_path / "wb"))
    assert w.returncode == 0 and "wandb" not in w.stderr.replace(str(tmp_path), "").lower(), w.stderr
    (runfile,) = (tmp_path / "wb").rglob("run-*.wandb")
    recs = _wandb_records(runfile)
    summary = {str(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for x in recs
               if x.WhichOneof("record_type") == "summary" for i in x.summary.update}
    assert summary["score"] == 1 and summary["reflexopt.gate"] == "passed" and summary["reflexopt.kind"] == "eval"
    _no_canary(tmp_path / "wb")


def test_wandb_offline_run_has_config_trial_history_verdict_and_artifact(task: list[str], tmp_path: Path) -> None:
    r = _run(tmp_path, "optimize", *task, "-m", "openai/t", "--max-trials", "2", "--track", "wandb", "--json",
             WANDB_MODE="offline", WANDB_DIR=str(tmp_path / "wb"))
    assert r.returncode == 0, r.stderr
    assert "wandb" not in r.stderr.replace(str(tmp_path), "").lower(), r.stderr
    first = json.loads(r.stdout)
    (runfile,) = (tmp_path / "wb").rglob("run-*.wandb")
    recs = _wandb_records(runfile)

    def key(item: Any) -> str:
        return str(item.key or "/".join(item.nested_key))

    run = next(x.run for x in recs if x.WhichOneof("record_type") == "run")
    config = {key(i): json.loads(i.value_json) for i in run.config.update}
    assert run.display_name == first["run_id"] and config["model.id"] == "openai/t"
    history = [{key(i): json.loads(i.value_json) for i in x.history.item} for x in recs
               if x.WhichOneof("record_type") == "history"]
    assert [h["trial"] for h in history if "val" in h] == [0, 1, 2]
    assert any(h.get("best_test") == first["best_test"] for h in history)
    summary = {key(i): json.loads(i.value_json) for x in recs if x.WhichOneof("record_type") == "summary"
               for i in x.summary.update}
    assert summary["reflexopt.best_candidate"] == first["best_candidate"]
    art = next(x.artifact for x in recs if x.WhichOneof("record_type") == "artifact")
    assert {"best.md", "report.html", "evals.jsonl", "summary.json"} <= {m.path for m in art.manifest.contents}
    _no_canary(tmp_path / "wb")



def test_tracker_problems_are_one_line_and_exit_2_before_any_model_call(task: list[str], openai_server: FakeOpenAI,
                                                                        tmp_path: Path) -> None:
    # an MLflow server that is not there
    r = _run(tmp_path, "optimize", *task, "-m", "openai/t", "--track", "mlflow",
             MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "MLflow tracking store" in lines[0] and "MLFLOW_TRACKING_URI" in lines[0]
    # the extra not installed: an `mlflow` that cannot be imported comes first on the path
    shadow = tmp_path / "shadow" / "mlflow"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named mlflow')\n")
    r = _run(tmp_path, "optimize", *task, "-m", "openai/t", "--track", "mlflow", PYTHONPATH=str(shadow.parent))
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and 'pip install "reflexopt[mlflow]"' in lines[0], r.stderr
    # W&B online with no key; an unknown tracker; --register-prompt without MLflow
    r = _run(tmp_path, "optimize", *task, "-m", "openai/t", "--track", "wandb", WANDB_MODE="online",
             HOME=str(tmp_path), WANDB_DIR=str(tmp_path / "wb"))
    assert r.returncode == 2 and "WANDB_MODE=offline" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _run(tmp_path, "optimize", *task, "-m", "openai/t", "--track", "neptune")
    assert r.returncode == 2 and "unknown tracker 'neptune'" in r.stderr and "mlflow, wandb" in r.stderr
    r = _run(tmp_path, "optimize", *task, "-m", "openai/t", "--track", "wandb", "--register-prompt", "x",
             WANDB_MODE="offline", WANDB_DIR=str(tmp_path / "wb"))
    assert r.returncode == 2 and "--register-prompt needs a tracker with a prompt registry" in r.stderr
    assert openai_server.requests == []


def test_a_tracker_lost_part_way_is_detached_with_one_note_and_the_run_goes_on(
        task: list[str], openai_server: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reflexopt.config import optimize_config, track_spec
    from reflexopt.optimizer import Optimizer

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    cfg = optimize_config(task[0], task[1], model="openai/t", api_base=openai_server.url, metric="contains",
                          track=track_spec(["mlflow"]), budget={"max_trials": 3})
    events: list[tuple[str, dict[str, Any]]] = []
    opt = Optimizer(cfg, on_event=lambda k, d: events.append((k, d)))
    client = opt.bus.trackers[0].backend.client  # type: ignore[attr-defined]
    real, calls = client.log_batch, []

    def dies_after_three(*a: Any, **k: Any) -> Any:  # the tracking server goes away after the run started
        calls.append(1)
        if len(calls) > 3:
            raise ConnectionError("tracking server went away")
        return real(*a, **k)

    monkeypatch.setattr(client, "log_batch", dies_after_three)
    result = opt.run()
    notes = [d["message"] for k, d in events if k == "note" and "subscriber" in d["message"]]
    assert len(notes) == 1 and "tracking server went away" in notes[0]
    assert result.trials == 3 and Path(result.run_dir, "summary.json").exists()
    assert len(calls) == 4  # detached at the first failure: never called again


def test_trials_that_workers_ran_are_logged_to_the_coordinators_run(tmp_path: Path) -> None:
    """Workers' trials reach the coordinator only through the study; at the end they are logged from the run
    directory at their own trial numbers."""
    from reflexopt.trackers import Tracker

    class Probe:
        name, logged = "probe", []  # type: ignore[var-annotated]

        def open(self, **k: Any) -> str:
            return "r1"

        def metrics(self, run: str, values: dict[str, float], step: int) -> None:
            self.logged.append((step, values))

        def tags(self, run: str, values: dict[str, str]) -> None: ...
        def files(self, run: str, paths: Any) -> None: ...
        def register_prompt(self, *a: Any) -> None: ...
        def note(self, run: str, text: str) -> None: ...
        def close(self, run: str, ok: bool) -> None: ...

    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "p.md").write_text("Look.\n")
    (run / "config.json").write_text(json.dumps({"model": {"id": "m"}, "data": {"path": "d.jsonl"},
                                                 "prompt_path": str(tmp_path / "p.md")}))
    rows = [{"id": f"t{n}", "key": f"k{n}", "operator": "demos", "trial": n, "val_mean": n / 10,
             "state": "complete"} for n in (1, 2, 3)]
    (run / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    backend = Probe()
    t = Tracker(backend)  # type: ignore[arg-type]
    t("start", {"run_id": "r", "run_dir": str(run), "resumed": False, "study": "s", "calls_estimate": 1})
    t("trial", {"n": 1, "val": 0.1, "best_val": 0.1, "state": "complete", "usage": {}})  # the coordinator's own
    t("done", {"run_id": "r", "best_test": 0.5, "baseline_test": 0.4, "delta_ci95": [0, 0.2], "p_value": 0.3})
    steps = [s for s, v in backend.logged if "val" in v]
    assert steps == [1, 2, 3]  # trial 1 once (seen live), 2 and 3 from the run directory
