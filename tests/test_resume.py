"""Kill a real optimize run (a subprocess talking HTTP to a loopback model server) with SIGKILL, resume it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeOpenAI, names_labels, write_jsonl


def _reply(req: dict[str, Any]) -> str:
    msgs = req["messages"]
    text = " ".join(m["content"] for m in msgs)
    if "<prompt>" in text or "Failing cases" in text:
        return "I cannot help with prompts."  # a useless reasoning model
    item = msgs[-1]["content"]
    good = names_labels(text)
    right = "positive" if "good" in item else "negative"
    h = int(hashlib.md5(item.encode()).hexdigest(), 16) % 100
    return right if h < (85 if good else 10) else "a review"


def _key(req: dict[str, Any]) -> str:
    return json.dumps({k: req.get(k) for k in ("messages", "temperature", "max_tokens")}, sort_keys=True)


def _cli(args: list[str], home: Path) -> list[str]:
    return [sys.executable, "-m", "reflexopt", "optimize", *args]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "REFLEXOPT_HOME": str(home), "OPENAI_API_KEY": "sk-test-0000000000000000"}


@pytest.fixture
def task(tmp_path: Path) -> tuple[Path, Path]:
    rows = [{"input": f"{'good' if i % 2 else 'bad'} gadget {i}", "ideal": "positive" if i % 2 else "negative"}
            for i in range(60)]
    prompt = tmp_path / "p.md"
    prompt.write_text("Look at this.\n")
    return write_jsonl(tmp_path / "d.jsonl", rows), prompt


def test_sigkill_then_resume_pays_for_no_completed_call(task: tuple[Path, Path], openai_server: FakeOpenAI,
                                                       tmp_path: Path) -> None:
    data, prompt = task
    completed: list[str] = []
    lock = threading.Lock()
    proc_box: dict[str, subprocess.Popen[bytes]] = {}
    kill_at = 45

    def responder(req: dict[str, Any]) -> str:
        with lock:
            n = len(openai_server.requests)
            if n == kill_at and "p" in proc_box:
                os.kill(proc_box["p"].pid, signal.SIGKILL)  # dies with this request in flight
                time.sleep(0.2)
            completed.append(_key(req))
        return _reply(req)

    openai_server.responder = responder
    run_dir = tmp_path / "run"
    args = [str(data), str(prompt), "-m", "openai/test", "--api-base", openai_server.url, "--metric", "contains",
            "--max-trials", "5", "--patience", "5", "--run-dir", str(run_dir), "--json", "--concurrency", "1"]
    home = tmp_path / "home"
    p = subprocess.Popen(_cli(args, home), env=_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc_box["p"] = p
    p.wait(timeout=300)
    assert p.returncode == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists()
    first_completed = set(completed[: kill_at - 1])
    n_first = len(openai_server.requests)

    resumed = subprocess.run(_cli(["--resume", "--run-dir", str(run_dir), "--json"], home), env=_env(home),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    second = [_key(r) for _, r in openai_server.requests[n_first:]]
    assert not first_completed.intersection(second), "a call completed before the kill was paid for again"
    assert result["run_id"] == "run" and result["trials"] == 5
    assert (run_dir / "summary.json").exists() and (run_dir / "best.md").read_text() == \
        json.loads((run_dir / "summary.json").read_text())["best_prompt"]
    events = [json.loads(x)["event"] for x in (run_dir / "events.jsonl").read_text().splitlines()]
    assert events.count("start") == 2 and events[-1] == "done"

    # an uninterrupted run of the same configuration gives the same kind of result
    fresh = subprocess.run(_cli([*args[:-5], "--run-dir", str(tmp_path / "fresh"), "--json"], home),
                           env=_env(tmp_path / "home2"), capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr
    assert set(json.loads(fresh.stdout)) == set(result)


def test_resume_without_an_id_takes_the_latest_optimize_run_not_an_eval_or_comparison(tmp_path: Path) -> None:
    """`--resume` with no id continues the latest optimize run: an eval or a comparison made after it is no run
    to resume."""
    from reflexopt.store import RunStore, runs_root

    for i, name in enumerate(["20260101-000000-aaaa", "eval-20260101-000001-bbbb", "compare-20260101-000002-cccc"]):
        (runs_root() / name).mkdir(parents=True)
        (runs_root() / name / "config.json").write_text("{}")
        os.utime(runs_root() / name / "config.json", (1000 + i, 1000 + i))
        os.utime(runs_root() / name, (1000 + i, 1000 + i))
    assert RunStore.open().root.name == "20260101-000000-aaaa"


def test_a_run_folder_is_an_eval_by_its_settings_not_its_name(tmp_path: Path) -> None:
    """`--run-dir eval-mine` holds an optimize run: the history reads the folder's settings, not its name."""
    from reflexopt.eval_history import is_eval

    folder = tmp_path / "eval-mine"
    folder.mkdir()
    (folder / "config.json").write_text('{"model": {"id": "m"}}')
    assert not is_eval(folder)
    (folder / "config.json").write_text('{"kind": "eval"}')
    assert is_eval(folder)
