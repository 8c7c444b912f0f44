"""reflexopt batch: validation with locations, warm start, regression gate, kill and resume."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeOpenAI, names_labels, write_jsonl

from reflexopt.batch import load_jobs
from reflexopt.errors import ConfigError


def _make_files(tmp_path: Path, n_jobs: int = 3) -> Path:
    for j in range(n_jobs):
        rows = [{"input": f"{'good' if i % 2 else 'bad'} item {j}-{i}", "ideal": "positive" if i % 2 else "negative"}
                for i in range(45)]
        write_jsonl(tmp_path / f"d{j}.jsonl", rows)
        (tmp_path / f"p{j}.md").write_text(f"Job {j}: look at this.\n")
    jobs = "\n".join(f"  - name: job{j}\n    dataset: d{j}.jsonl\n    prompt: p{j}.md" for j in range(n_jobs))
    return _write(tmp_path / "jobs.yaml", "defaults:\n  model: openai/test\n  metric: contains\n"
                  "  budget: {max_trials: 3, patience: 3}\n  tolerance: 0.05\njobs:\n" + jobs + "\n")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_validation_reports_every_problem_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"input": "a", "ideal": "b"}\n')
    (tmp_path / "p.md").write_text("x\n")
    f = _write(tmp_path / "jobs.yaml", "jobs:\n  - name: a\n    dataset: d.jsonl\n    prompt: p.md\n"
               "    budget: {max_calls: -5}\n  - name: b\n    dataset: missing.jsonl\n    prompt: p.md\n"
               "    colour: blue\n  - name: a\n    dataset: d.jsonl\n    prompt: p.md\n")
    with pytest.raises(ConfigError) as ei:
        load_jobs(f)
    msg = str(ei.value)
    assert "3 problem(s)" in msg or "4 problem(s)" in msg
    assert f"{f}:5: jobs[0] (a).budget.max_calls" in msg
    assert f"{f}:7: jobs[1] (b).dataset: no such file 'missing.jsonl'" in msg
    assert f"{f}:9: jobs[1] (b).colour: Extra inputs are not permitted" in msg
    assert "duplicate job name 'a'" in msg


def _reply_for(quality: dict[str, int]):  # type: ignore[no-untyped-def]
    def reply(req: dict[str, Any]) -> str:
        msgs = req["messages"]
        text = " ".join(m["content"] for m in msgs)
        if "<prompt>" in text or "Failing cases" in text:
            return "no"
        item = msgs[-1]["content"]
        right = "positive" if "good" in item else "negative"
        h = int(hashlib.md5(item.encode()).hexdigest(), 16) % 100
        acc = quality["with_spec"] if names_labels(text) else quality["without"]
        return right if h < acc else "a review"

    return reply


def _batch(jobs: Path, home: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "reflexopt", "batch", str(jobs), "--json", *extra]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "REFLEXOPT_HOME": str(home), "OPENAI_API_KEY": "sk-test-0000000000000000"}


def test_batch_kill_resume_then_regression_gate(tmp_path: Path, openai_server: FakeOpenAI) -> None:
    jobs = _make_files(tmp_path)
    text = jobs.read_text().replace("model: openai/test", f"model: openai/test\n  api_base: {openai_server.url}")
    jobs.write_text(text)
    quality = {"with_spec": 90, "without": 10}
    reply = _reply_for(quality)
    lock = threading.Lock()
    box: dict[str, Any] = {"kill_on": None, "proc": None, "seen": []}

    def responder(req: dict[str, Any]) -> str:
        content = req["messages"][-1]["content"]
        with lock:
            box["seen"].append(content)
            if box["kill_on"] and box["kill_on"] in content and box["proc"] is not None:
                os.kill(box["proc"].pid, signal.SIGKILL)
                box["proc"] = None
        return reply(req)

    openai_server.responder = responder
    home = tmp_path / "home"
    box["kill_on"] = "item 1-"  # die in the middle of the second job
    p = subprocess.Popen(_batch(jobs, home), env=_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    box["proc"] = p
    p.wait(timeout=300)
    assert p.returncode == -signal.SIGKILL
    box["kill_on"] = None
    n_before = len(box["seen"])

    r = subprocess.run(_batch(jobs, home), env=_env(home), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["round"] == 1 and res["complete"] and not res["regressions"]
    by = {j["job"]: j for j in res["jobs"]}
    assert by["job0"].get("skipped") and not by["job1"].get("skipped")
    assert not any("item 0-" in c for c in box["seen"][n_before:]), "a finished job was run again"
    assert all(j["status"] == "done" and j["new_best"] > j["new_baseline"] for j in res["jobs"])

    # round 2: the model got worse behind the same id; warm starts; the gate trips
    quality.update(with_spec=40, without=5)
    r2 = subprocess.run(_batch(jobs, home), env=_env(home), capture_output=True, text=True, timeout=300)
    assert r2.returncode == 1, r2.stderr
    res2 = json.loads(r2.stdout)
    assert res2["round"] == 2 and set(res2["regressions"]) == {"job0", "job1", "job2"}
    for j in res2["jobs"]:
        assert j["warm_start"] and j["previous_best"] == by[j["job"]]["new_best"] and j["regression"]
    table = subprocess.run([sys.executable, "-m", "reflexopt", "batch", str(jobs)], env=_env(home),
                           capture_output=True, text=True, timeout=300)
    # round 3, human-readable: the table, and an exit code that agrees with the flags it shows
    assert "batch round 3" in table.stdout and "previous best" in table.stdout
    assert (table.returncode == 1) == ("REGRESSION" in table.stdout), table.stdout


def test_a_second_batch_on_the_same_jobs_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two `reflexopt batch jobs.yaml` at once both wrote the batch's state.json (each from its own stale copy),
    and their jobs met in the same run folders. The second one now stops at once; the first's state is kept."""
    from reflexopt.batch import Batch
    from reflexopt.errors import ConfigError
    from reflexopt.paths import hold_lock

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0000000000000000")
    batch = Batch(_make_files(tmp_path, 1))
    held = hold_lock(batch.root / "lock", "held by the test", fix="")
    try:
        with pytest.raises(ConfigError, match=f"batch {tmp_path / 'jobs.yaml'} is running in another process"):
            batch.run()
        assert not (batch.root / "state.json").exists()
    finally:
        held.release()


def test_a_job_may_ask_for_balanced_val_and_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`balanced: true` in a job (or its defaults) is `optimize --balanced` for each of its models."""
    from reflexopt.jobs import job_config, load_jobs

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key-0000000000")
    _make_files(tmp_path, 1)
    f = _write(tmp_path / "b.yaml", "defaults:\n  model: openai/test\n  metric: contains\n  balanced: true\n"
               "jobs:\n  - name: a\n    dataset: d0.jsonl\n    prompt: p0.md\n"
               "  - name: b\n    dataset: d0.jsonl\n    prompt: p0.md\n    balanced: false\n")
    a, b = load_jobs(f)
    assert job_config(a, "openai/test").balanced and not job_config(b, "openai/test").balanced
