"""Judge alignment (`reflexopt align`): a rubric tuned so that the judge's verdicts agree with people's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeOpenAI, write_jsonl

from reflexopt.align import EXAMPLES_HEADING, OPERATORS, align_cases
from reflexopt.config import Budget, align_config
from reflexopt.data import load_dataset
from reflexopt.errors import ConfigError, DataError
from reflexopt.judge import load_rubric
from reflexopt.optimizer import Optimizer


def verdict(request_text: str) -> str:
    """A lenient judge: it passes every response, unless its rubric shows graded examples or asks for a good
    response, when it passes only the good ones (as the people did)."""
    response = re.search(r"<response>\s*(.*?)\s*</response>", request_text, re.S)
    assert response is not None, "the judge's request holds the graded response"
    rubric = request_text.split("<input>")[0]
    strict = EXAMPLES_HEADING in rubric or "good" in rubric.lower()
    ok = "good" in response.group(1) if strict else True
    return json.dumps({"reasoning": "covers it" if ok else "misses the point", "score": 5 if ok else 1,
                       "failure_category": "none" if ok else "misses the point"})


@pytest.fixture
def graded(tmp_path: Path) -> tuple[Path, Path]:
    rows = [{"input": f"question {i}", "response": f"{'good' if i % 2 else 'bad'} answer {i}",
             "human": "pass" if i % 2 else "fail"} for i in range(60)]
    rubric = tmp_path / "rubric.md"
    rubric.write_text("---\nscale: [1, 5]\npass: 4\n---\nScore the response from 1 (useless) to 5 (right).\n")
    return write_jsonl(tmp_path / "graded.jsonl", rows), rubric


def test_alignment_tunes_the_rubric_to_peoples_verdicts(graded: tuple[Path, Path], fakes: Any,
                                                        tmp_path: Path) -> None:
    """The lenient judge agrees with people on half the cases; shown graded examples (or told what people
    count as good) it agrees on all. The tuned rubric is a rubric file with the starting front matter."""
    data, rubric = graded
    judge = fakes("fake/judge", lambda m: verdict(m[-1]["content"]))
    fakes("fake/reasoner", lambda m: "<prompt>Score 5 only when the response is good, else 1.</prompt>")
    out = tmp_path / "aligned.md"
    cfg = align_config(data, judge="fake/judge", rubric=str(rubric), responses="response", human="human",
                       reasoning_model="fake/reasoner", output=out, budget=Budget(max_trials=8))
    r = Optimizer(cfg, run_dir=tmp_path / "run").run()
    assert r.baseline_test < 0.7 and r.best_test == 1.0 and r.significant
    tuned = load_rubric(str(out))
    assert (tuned.low, tuned.high, tuned.pass_score) == (1, 5, 4.0)
    assert tuned.text != load_rubric(str(rubric)).text
    cands = [json.loads(x) for x in (tmp_path / "run" / "candidates.jsonl").read_text().splitlines()]
    assert {c["operator"] for c in cands if c["id"] != "baseline"} <= set(OPERATORS)
    assert judge.calls and all("<response>" in m[-1]["content"] for m in judge.calls)


def test_alignment_cases_and_their_errors(tmp_path: Path) -> None:
    rubric = load_rubric("correctness")
    rows = [{"input": f"q{i}", "ideal": f"ref {i}", "response": f"r{i}", "human": s}
            for i, s in enumerate([5, 4, 3, 1, 2, 5, None, 4])]
    cases = load_dataset(write_jsonl(tmp_path / "g.jsonl", rows), aside=("response", "human"))
    got = align_cases(cases, rubric, responses="response", human="human")
    # a score on the rubric's scale passes at its pass mark (4); an unlabelled row is left out
    assert [c.ideal for c in got] == ["pass", "pass", "fail", "fail", "fail", "pass", "pass"]
    first = got[0]
    assert first.input == "r0" and (first.extra["_graded_input"], first.extra["_graded_reference"]) == ("q0", "ref 0")
    words = load_dataset(write_jsonl(tmp_path / "w.jsonl", [{**r, "human": w} for r, w in zip(
        rows, ["pass", "fail", "yes", "no", "true", "false", None, "1"])]), aside=("response", "human"))
    assert [c.ideal for c in align_cases(words, rubric, responses="response", human="human")] == \
        ["pass", "fail", "pass", "fail", "pass", "fail", "pass"]
    off = load_dataset(write_jsonl(tmp_path / "o.jsonl", [{**r, "human": 70 + i} for i, r in enumerate(rows)]),
                       aside=("response", "human"))
    with pytest.raises(DataError, match="not on the rubric's scale"):
        align_cases(off, rubric, responses="response", human="human")
    rows[2]["response"] = "  "
    cases = load_dataset(write_jsonl(tmp_path / "g2.jsonl", rows), aside=("response", "human"))
    with pytest.raises(DataError, match="no response") as e:
        align_cases(cases, rubric, responses="response", human="human")
    assert e.value.line == 3
    few = load_dataset(write_jsonl(tmp_path / "g3.jsonl", rows[:2]), aside=("response", "human"))
    with pytest.raises(DataError, match="at least 6"):
        align_cases(few, rubric, responses="response", human="human")
    with pytest.raises(ConfigError, match="--judge"):
        align_config(tmp_path / "g.jsonl", judge=None, rubric="correctness", responses="response", human="human")


def test_align_from_the_command_line(graded: tuple[Path, Path], openai_server: FakeOpenAI, tmp_path: Path) -> None:
    data, rubric = graded
    openai_server.responder = lambda req: (
        "<prompt>Score 5 only when the response is good, else 1.</prompt>" if "improving" in
        req["messages"][-1]["content"] else verdict(req["messages"][-1]["content"]))
    out = tmp_path / "aligned.md"
    r = subprocess.run([sys.executable, "-m", "reflexopt", "align", str(data), "--responses", "response", "--human",
                        "human", "--judge", "openai/judge", "--judge-criteria", str(rubric), "--api-base",
                        openai_server.url, "--max-trials", "8", "-o", str(out), "--json"],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "REFLEXOPT_HOME": str(tmp_path / "h"),
                            "OPENAI_API_KEY": "sk-test-00000000000000"})
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["best_test"] == 1.0 and res["best_test"] > res["baseline_test"]
    assert load_rubric(str(out)).pass_score == 4.0
    missing = subprocess.run([sys.executable, "-m", "reflexopt", "align", str(data), "--responses", "response",
                              "--human", "nope", "--judge", "openai/judge", "--judge-criteria", str(rubric),
                              "--api-base", openai_server.url], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "REFLEXOPT_HOME": str(tmp_path / "h"),
                                  "OPENAI_API_KEY": "sk-test-00000000000000"})
    assert missing.returncode == 2 and "'nope'" in missing.stderr and "Traceback" not in missing.stderr


def test_an_alignment_resumes_with_the_same_command(graded: tuple[Path, Path], openai_server: FakeOpenAI,
                                                    tmp_path: Path) -> None:
    data, rubric = graded
    openai_server.responder = lambda req: (
        "<prompt>Score 5 only when the response is good, else 1.</prompt>" if "improving" in
        req["messages"][-1]["content"] else verdict(req["messages"][-1]["content"])
        if "<response>" in req["messages"][-1]["content"] else "pass")  # the plain optimize run's task model
    env = {**os.environ, "REFLEXOPT_HOME": str(tmp_path / "h"), "OPENAI_API_KEY": "sk-test-00000000000000"}
    cmd = [sys.executable, "-m", "reflexopt", "align", str(data), "--responses", "response", "--human", "human",
           "--judge", "openai/judge", "--judge-criteria", str(rubric), "--api-base", openai_server.url, "--json"]
    first = subprocess.run([*cmd, "--max-trials", "1"], capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    one = json.loads(first.stdout)
    served = len(openai_server.requests)
    more = subprocess.run([*cmd, "--max-trials", "3", "--resume"], capture_output=True, text=True, timeout=600,
                          env=env)
    assert more.returncode == 0, more.stderr[-2000:]
    again = json.loads(more.stdout)
    assert again["run_id"] == one["run_id"] and (one["trials"], again["trials"]) == (1, 3)
    assert len(openai_server.requests) - served < served  # the baseline and the first trial were not asked again
    (tmp_path / "p.md").write_text("Say it: {input}\n")
    other = subprocess.run([sys.executable, "-m", "reflexopt", "optimize", str(data), str(tmp_path / "p.md"),
                            "-m", "openai/t", "--api-base", openai_server.url, "--metric", "contains",
                            "--ideal-field", "human", "--max-trials", "1", "--json"],
                           capture_output=True, text=True, timeout=600, env=env)
    run_id = json.loads(other.stdout)["run_id"]
    wrong = subprocess.run([*cmd, "--resume", run_id], capture_output=True, text=True, timeout=600, env=env)
    assert wrong.returncode == 2 and f"run {run_id} is not an alignment" in wrong.stderr, wrong.stderr


def test_a_strategy_that_drives_the_model_itself_cannot_align(graded: tuple[Path, Path]) -> None:
    data, rubric = graded
    cfg = align_config(data, judge="fake/judge", rubric=str(rubric), responses="response", human="human",
                       strategy="mipro")
    with pytest.raises(ConfigError, match="cannot run a judge's alignment"):
        Optimizer(cfg)
