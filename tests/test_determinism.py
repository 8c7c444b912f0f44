"""Same seed, same run, at any concurrency: pruning and the gate see cases in submission order, whatever order
they finish in. Two runs with one seed at `--concurrency 8`, against a fake whose latency is drawn from a
different seed in each run: the cases finish in different orders, and the runs are the same."""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeOpenAI, label_rows, names_labels, write_jsonl


def _answer(req: dict[str, Any]) -> str:
    """Deterministic in the request: right on most cases when the prompt names the labels, else mostly not."""
    text = " ".join(str(m["content"]) for m in req["messages"])
    truth = "positive" if "good" in req["messages"][-1]["content"] else "negative"
    wrong = "negative" if truth == "positive" else "positive"
    h = int(hashlib.sha256(text.encode()).hexdigest(), 16)
    if names_labels(text):
        return truth if h % 4 else wrong
    return truth if h % 3 == 0 else "?"


def _run(tmp: Path, latency_seed: int, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], list[str], Any]:
    from reflexopt.config import optimize_config
    from reflexopt.models import cache
    from reflexopt.optimizer import Optimizer

    rng = random.Random(latency_seed)
    lock = __import__("threading").Lock()
    server = FakeOpenAI()

    def slow(req: dict[str, Any]) -> str:
        with lock:
            delay = rng.uniform(0, 0.03)
        time.sleep(delay)
        return _answer(req)

    server.responder = slow
    home = tmp / f"home{latency_seed}"
    monkeypatch.setenv("REFLEXOPT_HOME", str(home))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-000000000000")
    cache._shared.clear()
    data = write_jsonl(tmp / "d.jsonl", label_rows(60))
    (tmp / "p.md").write_text("Look at this: {input}\n")
    cfg = optimize_config(data, tmp / "p.md", model="openai/x", api_base=server.url, metric="contains",
                          concurrency=8, seed=0, budget={"max_trials": 8, "patience": 50})
    order: list[str] = []
    try:
        result = Optimizer(cfg, on_event=lambda k, d: order.append(f"{d['candidate']}:{d['case_id']}")
                           if k == "case" else None).run()
    finally:
        server.close()
    from reflexopt.store import RunStore

    keep = ("id", "key", "operator", "parent", "state", "val_mean", "n_val", "pruned_by", "fallback")
    records = sorted(({k: c.get(k) for k in keep} for c in RunStore(Path(result.run_dir)).candidates()),
                     key=lambda c: str(c["id"]))
    verdict = (result.best_candidate, result.best_val, result.best_test, result.baseline_test, result.trials,
               result.pruned_trials, result.p_value)
    return records, order, verdict


def test_one_seed_at_concurrency_8_gives_the_same_run_whatever_the_latency(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    a_records, a_order, a_verdict = _run(tmp_path, 1, monkeypatch)
    b_records, b_order, b_verdict = _run(tmp_path, 2, monkeypatch)
    assert a_order != b_order  # the cases did finish in different orders
    assert any(r["state"] == "pruned" for r in a_records)  # the pruner had decisions to make
    assert a_records == b_records
    assert a_verdict == b_verdict


def test_test_references_do_not_shape_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The output cap, the label set and the default metric came from train+val+test references, so a label
    seen only in test changed the run. The same run with a test label nobody else has now gets the same task
    cap, label set and metric (the split itself is drawn from the whole file, before anything runs)."""
    from dataclasses import replace

    from reflexopt.config import optimize_config
    from reflexopt.data import Splits
    from reflexopt.evaluator import Evaluator

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-000000000000")
    write_jsonl(tmp_path / "d.jsonl", label_rows(30))
    (tmp_path / "p.md").write_text("Look at this: {input}\n")
    cfg = optimize_config(tmp_path / "d.jsonl", tmp_path / "p.md", model="openai/x",
                          api_base="http://127.0.0.1:9/v1")
    shaped = []
    for odd_test_label in (False, True):
        ev = Evaluator(cfg, None)
        if odd_test_label:
            test = tuple(replace(c, ideal="an unusually long label that only the test split holds")
                         for c in ev.splits.test)
            ev.splits = Splits(ev.splits.train, ev.splits.val, test)
        ev.connect()
        shaped.append((ev.task.clients[0].spec.max_tokens, ev.scorer.name, getattr(ev.scorer, "label_set", None)))
    assert shaped[0] == shaped[1] and shaped[0][2] == ["negative", "positive"]
