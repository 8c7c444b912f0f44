"""scripts/bench.py, the one benchmark runner: what its tables claim, and that it resumes without rerunning rows."""

from __future__ import annotations

import argparse
import importlib.util
import json
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, FakeOpenAI, write_jsonl

_spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
assert _spec and _spec.loader
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _labels(n: int = 40) -> list[dict[str, str]]:
    # three in four are negative: the constant answer is "negative" on every seed's train split, and scores about
    # 0.75 on test
    return [{"input": f"item {i} is {'good' if i % 4 == 0 else 'bad'}",
             "ideal": "positive" if i % 4 == 0 else "negative"} for i in range(n)]


def _spec_for(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    data = write_jsonl(tmp_path / "labels.jsonl", _labels())
    (tmp_path / "vague.md").write_text("Read this. {input}\n", encoding="utf-8")
    return {"title": "T", "model": "openai/x", "args": ["--metric", "contains"], "seeds": [1, 2, 3],
            "budgets": [100], "reference": "reflex", "sets": [{"name": "s", "data": str(data),
                                                              "prompt": str(tmp_path / "vague.md")}],
            "arms": [{"name": "reflex", "args": []}, {"name": "mipro", "args": ["--strategy", "mipro"]}], **extra}


def _row(arm: str, seed: int, test: float, calls: int = 90, commit: str = "abc1234", **kw: Any) -> dict[str, Any]:
    return {"set": "s", "arm": arm, "budget": 100, "seed": seed, "best_test": test, "best_val": test, "calls": calls,
            "commit": commit, "baseline_test": 0.1, **kw}


def _cells(table: str, first: str) -> list[str]:
    line = next(x for x in table.splitlines() if x.startswith(f"| {first} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_one_seed_shows_no_spread() -> None:
    assert bench._ms([0.5]) == "0.500 (1 seed)"
    assert bench._ms([0.4, 0.6]) == "0.500 ± 0.141"
    assert bench._ms([]) == "-"


def test_the_readme_table_bolds_only_a_lead_that_holds_on_every_seed(tmp_path: Path) -> None:
    spec = _spec_for(tmp_path)
    # mipro is higher on average (0.7 against 0.5) but lower than reflex on seed 3: no lead for anyone
    rows = [_row("reflex", 1, 0.5), _row("reflex", 2, 0.5), _row("reflex", 3, 0.5),
            _row("mipro", 1, 0.9), _row("mipro", 2, 0.8), _row("mipro", 3, 0.4)]
    cells = _cells(bench.compact(spec, rows, 100), "s")
    assert not any("**" in c for c in cells), cells
    # higher on every seed: a lead, and only for that arm
    rows[-1] = _row("mipro", 3, 0.6)
    cells = _cells(bench.compact(spec, rows, 100), "s")
    assert cells[2] == "0.500 ± 0.000 · 90"
    assert cells[3] == "**0.767 ± 0.153 · 90**"
    # a tie on one seed is no lead either
    rows[-1] = _row("mipro", 3, 0.5)
    assert "**" not in bench.compact(spec, rows, 100)


def test_the_readme_table_says_when_an_arm_has_fewer_seeds_than_the_spec(tmp_path: Path) -> None:
    spec = _spec_for(tmp_path)
    spec["arms"].append({"name": "gepa", "args": ["--strategy", "gepa"], "seeds": [1]})
    # gepa's run was resumed after a stop: 60 answers came from its earlier attempt's cache, and count as used
    rows = [_row("reflex", 1, 0.5), _row("reflex", 2, 0.5), _row("mipro", 1, 0.4),
            _row("gepa", 1, 0.2, reused_calls=60)]
    cells = _cells(bench.compact(spec, rows, 100), "s")
    const = bench.constant_answer(spec["sets"][0], [1, 2, 3])
    assert const and {v[0] for v in const.values()} == {"negative"}
    assert cells[1] == f"{sum(v[1] for v in const.values()) / 3:.3f}", "the constant answer's mean over the seeds"
    assert cells[3] == "0.400 · 90 (1 of 3 seeds)"
    assert cells[4] == "0.200 · 150", "an arm specified on one seed is complete with one"


def test_the_full_table_counts_wins_and_ties_against_the_reference_seed_by_seed(tmp_path: Path) -> None:
    spec = _spec_for(tmp_path)
    rows = [_row("reflex", 1, 0.5), _row("reflex", 2, 0.5), _row("reflex", 3, 0.5),
            _row("mipro", 1, 0.6), _row("mipro", 2, 0.5), _row("mipro", 3, 0.4)]
    table = bench.render(spec, rows, ROOT / "docs" / "benchmarks" / "labels.toml")
    line = next(x for x in table.splitlines() if x.startswith("| s | 100 | mipro |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3] == "0.500 ± 0.100"
    assert cells[8] == "1 of 3 (1)", "one win, one tie"
    assert cells[10] == "0 of 3", "never above the constant answer (about 0.75)"
    assert "mixes commits" not in table
    # a run resumed after a stop: the answers its earlier attempt paid for are named beside its paid calls
    rows[0]["reused_calls"] = 60
    table = bench.render(spec, rows, ROOT / "x.toml")
    line = next(x for x in table.splitlines() if x.startswith("| s | 100 | reflex | 1 |"))
    assert "| 90 (+60 reused) |" in line


def test_the_full_table_says_when_its_rows_come_from_several_commits_or_uncommitted_code(tmp_path: Path) -> None:
    spec = _spec_for(tmp_path)
    rows = [_row("reflex", 1, 0.5), _row("reflex", 2, 0.5, commit="def5678", dirty=True)]
    head = bench.render(spec, rows, ROOT / "docs" / "benchmarks" / "labels.toml").split("\n\n")[1]
    assert "Commit(s): abc1234, def5678 (uncommitted changes)" in head
    assert "**this table mixes commits**" in head


def test_the_full_table_says_when_its_rows_come_from_several_machines(tmp_path: Path) -> None:
    """The same prompt, cases and commit gave different answers on two machines (their llama.cpp builds): a table
    names the machines its rows ran on and says when there are several; rows made before the record say nothing."""
    spec = _spec_for(tmp_path)
    a = {"cpu": "CPU A", "cpu_flags": "0000aaaa", "llama_cpp_python": "0.3.36"}
    b = {**a, "cpu_flags": "1111bbbb"}
    one = bench.render(spec, [_row("reflex", 1, 0.5, machine=a), _row("reflex", 2, 0.5, machine=dict(a)),
                              _row("reflex", 3, 0.5)], ROOT / "x.toml").split("\n\n")[1]
    assert "Machine(s): CPU A (flags 0000aaaa), llama-cpp-python 0.3.36." in one and "mixes machines" not in one
    two = bench.render(spec, [_row("reflex", 1, 0.5, machine=a), _row("reflex", 2, 0.5, machine=b)],
                       ROOT / "x.toml").split("\n\n")[1]
    assert "CPU A (flags 0000aaaa)" in two and "CPU A (flags 1111bbbb)" in two
    assert "**this table mixes machines**" in two
    assert "Machine(s)" not in bench.render(spec, [_row("reflex", 1, 0.5)], ROOT / "x.toml")


def test_a_table_that_mixes_commits_sums_up_each_arm_once_per_commit(tmp_path: Path) -> None:
    """Two versions of the same arm (a development table: before and after a change) are two summary lines, each
    compared with the reference arm at its own commit, never one mean over both."""
    spec = _spec_for(tmp_path)
    rows = [_row("reflex", s, 0.5) for s in (1, 2, 3)] + [_row("mipro", s, 0.6) for s in (1, 2, 3)]
    rows += [_row("reflex", s, 0.7, commit="def5678") for s in (1, 2, 3)]
    rows += [_row("mipro", s, 0.6, commit="def5678") for s in (1, 2, 3)]
    table = bench.render(spec, rows, ROOT / "x.toml")
    assert _cells(table, "s | 100 | reflex @abc1234")[3] == "0.500 ± 0.000"
    assert _cells(table, "s | 100 | reflex @def5678")[3] == "0.700 ± 0.000"
    assert _cells(table, "s | 100 | mipro @abc1234")[8] == "3 of 3 (0)"
    assert _cells(table, "s | 100 | mipro @def5678")[8] == "0 of 3 (0)"
    held = [_row("reflex", 1, 0.5, holdout={"start": 0.1, "best": 0.4}),
            _row("reflex", 1, 0.5, commit="def5678", holdout={"start": 0.1, "best": 0.6})]
    lines = [x for x in bench.render(spec, held, ROOT / "x.toml").splitlines() if x.endswith(("abc1234 |", "def5678 |"))
             and "+0." in x]
    assert len(lines) == 2, "the held-out rows say which commit made them"
    # and their summary is once per commit, not one mean over both
    summary = bench.render(spec, held, ROOT / "x.toml").split("returned on held-back rows")[1]
    assert "| s | 100 | reflex | " not in summary
    assert _cells(summary, "s | 100 | reflex @abc1234")[3] == "0.400 (1 seed)"
    assert _cells(summary, "s | 100 | reflex @def5678")[3] == "0.600 (1 seed)"


def test_a_spec_without_a_required_key_names_it(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text('title = "x"\nmodel = "m"\nseeds = [1]\nbudgets = [1]\n[[sets]]\nname = "s"\n', encoding="utf-8")
    with pytest.raises(SystemExit, match=r"bad.toml: missing `arms`"):
        bench.load_spec(p)


def _toml(spec: dict[str, Any]) -> str:
    """Just enough TOML for the specs these tests write."""
    out = []
    for k, v in spec.items():
        if k not in ("sets", "arms"):
            out.append(f"{k} = {json.dumps(v)}")
    for table in ("sets", "arms"):
        for item in spec[table]:
            out.append(f"[[{table}]]")
            out += [f"{k} = {json.dumps(v)}" for k, v in item.items()]
    return "\n".join(out) + "\n"


def test_a_table_runs_through_reflexopt_and_resumes_without_rerunning_a_row(
        tmp_path: Path, openai_server: FakeOpenAI) -> None:
    """The real path: bench.py runs `reflexopt optimize` and `reflexopt eval` against a model server, writes each
    row with its commit and command, and a second run of the same spec sends no request at all."""
    from reflexopt.data import load_dataset, split

    spec = _spec_for(tmp_path, seeds=[1], budgets=[40])
    test_inputs = {c.input for c in split(load_dataset(spec["sets"][0]["data"]), None, seed=1).test}

    def answer(req: dict[str, Any]) -> str:
        text = " ".join(m["content"] for m in req["messages"])
        last = req["messages"][-1]["content"]
        right = "positive" if "good" in last else "negative"
        if "Say yes or no" in text:  # 2.md: right on every test case only
            return right if last.strip().split(". ", 1)[-1] in test_inputs else "no"
        if "Say positive or negative" in text:  # 1.md: right on every case but the test cases
            return "no" if last.strip().split(". ", 1)[-1] in test_inputs else right
        return right if "positive" in text else "bad"

    openai_server.responder = answer
    spec["args"] += ["--api-base", openai_server.url]
    hand = tmp_path / "hand"
    hand.mkdir()
    (hand / "1.md").write_text("Say positive or negative. {input}\n", encoding="utf-8")
    (hand / "2.md").write_text("Say yes or no. {input}\n", encoding="utf-8")
    spec["sets"][0]["handwritten"] = str(hand)
    spec["arms"] = [{"name": "reflex", "args": []}, {"name": "hand-written", "kind": "handwritten"}]
    rest = [{"input": f"other item {i} is {'good' if i % 2 else 'bad'}",
             "ideal": "positive" if i % 2 else "negative"} for i in range(10)]
    spec["sets"][0]["holdout"] = str(write_jsonl(tmp_path / "rest.jsonl", rest))
    spec["check"] = ["exact"]
    spec_path = tmp_path / "t.toml"
    spec_path.write_text(_toml(spec), encoding="utf-8")
    jsonl, md = tmp_path / "t.jsonl", tmp_path / "t.md"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), str(spec_path), "--jsonl", str(jsonl), "--out",
           str(md), "--work", str(tmp_path / "work"), "--allow-dirty", "--keep-runs", str(tmp_path / "kept")]

    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    rows = [json.loads(x) for x in jsonl.read_text(encoding="utf-8").splitlines()]
    assert [(r["arm"], r["seed"], r["budget"]) for r in rows] == [("reflex", 1, 40), ("hand-written", 1, 40)]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                            check=True).stdout.strip()
    assert all(r["commit"] == commit for r in rows)
    # and the machine it ran on, the same for both rows: the CPU and what the embedded model's answers depend on
    assert rows[0]["machine"] == rows[1]["machine"] == bench.machine()
    assert rows[0]["machine"]["cpu"] and "llama_cpp_python" in rows[0]["machine"]
    assert rows[0]["command"].startswith("reflexopt optimize ") and "--seed 1 --max-calls 40" in rows[0]["command"]
    assert 0 < rows[0]["calls"] <= 40 and rows[0]["reused_calls"] == 0  # a fresh cache per run
    # the steps from the starting prompt to the returned one, read from the run's candidates
    lin = rows[0]["lineage"]
    assert (lin == []) if rows[0]["best_candidate"] == "baseline" else (lin[-1]["id"] == rows[0]["best_candidate"])
    # the starting prompt never names a label (the fake answers "bad"); the returned prompt is scored on its own
    held = rows[0]["holdout"]
    assert held["start"] == 0.0 and held["n_start"] == held["n_best"] == 10
    assert all(c.startswith("reflexopt eval ") for c in held["commands"])
    assert held["best"] == (1.0 if "positive" in rows[0]["best_prompt"] else 0.0)
    # the hand-written prompt chosen on val is scored there too (1.md: right on every case outside test), beside
    # what the constant answer scores on those rows (train's most common label, "negative": half of them)
    assert rows[1]["holdout"]["best"] == 1.0 and "start" not in rows[1]["holdout"]
    # the check metric re-scores the outputs the run recorded on test: the fake answers the bare label, so exact
    # match agrees with contains, prompt by prompt
    assert rows[0]["check"] == {"exact": {"start": rows[0]["baseline_test"], "best": rows[0]["best_test"]}}
    table = md.read_text(encoding="utf-8")
    assert f"| s | 40 | reflex | 1 | 0.000 | {held['best']:.3f} | {held['best']:+.3f} | 0.500 |" in table
    assert "| s | 40 | hand-written | 1 | - | 1.000 | - | 0.500 |" in table
    assert f"| s | 40 | reflex | {held['best']:.3f} (1 seed) | {int(held['best'] > 0.5)} of 1 |" in table
    assert rows[1]["handwritten"] == {"1.md": {"val": 1.0, "test": 0.0}, "2.md": {"val": 0.0, "test": 1.0}}
    # picked the way a user would: on val, whatever its test score
    assert rows[1]["best_candidate"] == "1.md" and rows[1]["best_test"] == 0.0 and rows[1]["max_test"] == 1.0
    assert "| s | 40 | hand-written (val/test: 1.md 1.000/0.000, 2.md 0.000/1.000) | 1 | 0.000 |" in \
        md.read_text(encoding="utf-8")

    # the run is archived beside the table (a later probe rescoring its candidates needs no work folder): what
    # the analysis reads, not the response cache or the study; the hand-written row made no run
    kept = sorted((tmp_path / "kept").iterdir())
    assert [k.name for k in kept] == ["home-s-reflex-40-1.tar.gz"]
    with tarfile.open(kept[0]) as tar:
        names = tar.getnames()
        cands = tar.extractfile(next(n for n in names if n.endswith("/candidates.jsonl")))
        assert cands and rows[0]["best_candidate"] in cands.read().decode()
    assert {Path(n).name for n in names} >= {"config.json", "summary.json", "candidates.jsonl", "evals.jsonl"}
    assert not [n for n in names if "cache" in n or "study" in n]
    packed = kept[0].read_bytes()

    sent = len(openai_server.requests)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(openai_server.requests) == sent, "a finished row was run again"
    assert jsonl.read_text(encoding="utf-8").count("\n") == 2
    assert kept[0].read_bytes() == packed, "the same run archived again changed its archive"

    # a second runner on the same jsonl (another core) leaves a row that a live runner holds, and takes over one
    # whose runner is gone
    import platform

    claim = bench.Claims(jsonl, tmp_path / "work").path(("s", "reflex", 40, 2))
    claim.parent.mkdir(parents=True, exist_ok=True)
    claim.write_text(f"{platform.node()} 1", encoding="utf-8")  # pid 1 is alive
    held = subprocess.run(cmd + ["--seeds", "2", "--arms", "reflex"], capture_output=True, text=True, timeout=600)
    assert held.returncode == 0, held.stderr[-3000:]
    assert len(openai_server.requests) == sent, "a row another runner holds was run"
    assert "1 rows left to the other runners on t.jsonl" in held.stderr
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    claim.write_text(f"{platform.node()} {gone}", encoding="utf-8")
    taken = subprocess.run(cmd + ["--seeds", "2", "--arms", "reflex"], capture_output=True, text=True, timeout=600)
    assert taken.returncode == 0, taken.stderr[-3000:]
    assert len(openai_server.requests) > sent
    assert [(r["arm"], r["seed"]) for r in map(json.loads, jsonl.read_text(encoding="utf-8").splitlines())][-1] == \
        ("reflex", 2)
    assert not claim.exists(), "a finished row's claim was left behind"


def test_runners_sharing_a_jsonl_read_each_others_rows_and_keep_a_shared_home_after_its_arm(tmp_path: Path) -> None:
    """The rows another runner appended are read (its line being written is left for the next read), and an arm
    that shares another arm's home waits for that arm's row, here or held by another runner."""
    import platform

    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"set": "s", "arm": "a", "budget": 1, "seed": 1}\n\n{"set": "s", "arm"', encoding="utf-8")
    assert bench.read_rows(jsonl) == [{"set": "s", "arm": "a", "budget": 1, "seed": 1}]
    claims = bench.Claims(jsonl, tmp_path / "work")
    s, reflex, ablation = {"name": "s"}, {"name": "reflex"}, {"name": "no rewrites", "home": "reflex"}
    assert bench.waits_for_home((s, ablation, 1, 1), {("s", "reflex", 1, 1)}, claims)
    assert not bench.waits_for_home((s, ablation, 1, 1), set(), claims)
    assert not bench.waits_for_home((s, reflex, 1, 1), {("s", "reflex", 1, 1)}, claims)
    assert claims.take(("s", "reflex", 1, 1)) and not claims.held(("s", "reflex", 1, 1))  # its own
    claims.path(("s", "reflex", 1, 1)).write_text(f"{platform.node()} 1", encoding="utf-8")  # another, alive
    assert claims.held(("s", "reflex", 1, 1)) and not claims.take(("s", "reflex", 1, 1))
    assert bench.waits_for_home((s, ablation, 1, 1), set(), claims)
    claims.release(("s", "reflex", 1, 1))
    assert not bench.waits_for_home((s, ablation, 1, 1), set(), claims)


def test_the_tables_say_on_which_seeds_a_prompt_collapsed_onto_one_label(tmp_path: Path) -> None:
    """On an imbalanced set a prompt that answers the majority label to every case can score well; the tables
    say so, from the collapse check in each row's test label report."""
    spec = _spec_for(tmp_path)
    fell = {"best": {"macro_f1": 0.3, "collapsed": {"label": "negative", "answers": 12, "of": 12}}}
    varied = {"best": {"macro_f1": 0.6}}
    rows = [_row("reflex", 1, 0.5, test_labels=varied), _row("reflex", 2, 0.5, test_labels=varied),
            _row("mipro", 1, 0.7, test_labels=fell), _row("mipro", 2, 0.6, test_labels=varied)]
    table = bench.render(spec, rows, ROOT / "x.toml")
    summary: dict[str, str] = {}
    for x in table.splitlines():  # the summary comes first, then every row
        if x.startswith("| s | 100 |"):
            summary.setdefault(x.split("|")[3].strip(), x)
    assert summary["mipro"].rstrip().endswith("| 1 of 2 |") and summary["reflex"].rstrip().endswith("| 0 of 2 |")
    assert "| 1 | 0.700 (collapsed: negative, 12 of 12) |" in table
    assert "| 2 | 0.600 |" in table
    cells = _cells(bench.compact(spec, rows, 100), "s")
    assert cells[3] == "**0.650 ± 0.071 · 90 (2 of 3 seeds), collapsed on 1**"
    assert cells[2] == "0.500 ± 0.000 · 90 (2 of 3 seeds)"
    # free text has no label report: no count
    plain = [_row("reflex", 1, 0.5), _row("mipro", 1, 0.7)]
    assert bench.collapsed(plain) is None and ", collapsed" not in bench.compact(spec, plain, 100)


def test_a_judge_table_counts_the_steps_to_each_returned_prompt_that_llm_rewrites_made(tmp_path: Path) -> None:
    """The judge-path table says how much of each returned prompt the reasoning model wrote: the steps of its
    lineage (the returned candidate and its ancestors) whose operator is an LLM rewrite, over all of them, summed
    over seeds; a DSPy strategy's step is not counted. Not the accepted path: on a judged run an induced instruction
    that was not a new best was the parent of the accepted step that the run returned, so counting accepted steps
    said 0 LLM steps for a prompt the reasoning model had written."""
    run = tmp_path / "work" / "abc1234" / "home-s-reflex-100-1" / "runs" / "r1"
    run.mkdir(parents=True)
    cands = [("baseline", "baseline", None), ("t1", "demos", "baseline"), ("t2", "format", "t1"),
             ("t3", "cue", "t2"), ("t4", "induce", "t2"), ("t5", "format", "t4")]
    (run / "candidates.jsonl").write_text("".join(json.dumps({"id": i, "operator": op, "parent": p}) + "\n"
                                                  for i, op, p in cands), encoding="utf-8")
    (run / "summary.json").write_text(json.dumps({"best_candidate": "t5", "best_test": 0.5,
                                                  "accepted_path": ["baseline", "t2", "t5"]}), encoding="utf-8")
    steps = bench.lineage(run, "t5", ["baseline", "t2", "t5"])
    assert [(st["operator"], st["accepted"], st["by_reasoning_model"]) for st in steps] == [
        ("demos", False, False), ("format", True, False), ("induce", False, True), ("format", True, False)]
    spec = _spec_for(tmp_path, llm_steps=True)
    rows = [_row("reflex", 1, 0.5, accepted=["format", "format"], best_candidate="t5"),
            _row("reflex", 2, 0.5, accepted=["fix"]), _row("reflex", 3, 0.5, accepted=[], lineage=[]),
            _row("mipro", 1, 0.6, accepted=["mipro"])]
    assert bench.add_lineage(spec, rows, tmp_path / "work") == 1  # seed 1's run is in the work folder
    assert rows[0]["lineage"] == steps and "lineage" not in rows[1]
    table = bench.render(spec, rows, ROOT / "x.toml")
    head = next(x for x in table.splitlines() if x.startswith("| set | budget | arm |"))
    assert head.endswith("| steps to the returned prompt by LLM rewrites |")
    summary: dict[str, str] = {}
    for x in table.splitlines():
        if x.startswith("| s | 100 |"):
            summary.setdefault(x.split("|")[3].strip(), x)
    # seed 1: induce, 1 of 4 steps; seed 2 (recorded before the lineage): its accepted fix; seed 3: none
    assert summary["reflex"].endswith("| 2 of 5 |") and summary["mipro"].endswith("| - |")
    assert "| demos → format* → induce → format* |" in table
    assert "LLM rewrites" not in bench.render(_spec_for(tmp_path), rows, ROOT / "x.toml")  # only when asked


def test_the_eval_rows_get_the_specs_args_without_the_options_only_optimize_takes() -> None:
    """A judge spec passes `--reasoning-model` to every optimize run; the holdout and hand-written rows run
    `reflexopt eval`, which refuses it, so the whole judge table failed at its first holdout row."""
    args = ["--judge", "openai/qwen", "--judge-criteria", "correctness", "--reasoning-model", "openai/qwen",
            "--no-rewrites", "--strategy=mipro", "--metric", "contains"]
    options = bench.cli_options(ROOT)  # read from the checkout's command line
    assert bench.eval_args(args, options) == ["--judge", "openai/qwen", "--judge-criteria", "correctness",
                                              "--metric", "contains"]


def test_a_judge_table_shows_the_check_metric_beside_the_judges_score(tmp_path: Path) -> None:
    """A judge can rate an answer well that does not do the task (a sentence repeated, not rewritten): the spec's
    `check` metrics show, beside the judge's test score, the same outputs scored against the references."""
    spec = _spec_for(tmp_path, check=["exact"])
    rows = [_row("reflex", 1, 0.9, check={"exact": {"start": 0.0, "best": 0.1}}),
            _row("reflex", 2, 0.8, check={"exact": {"start": 0.0, "best": 0.3}})]
    table = bench.render(spec, rows, ROOT / "x.toml")
    summary = next(x for x in table.splitlines() if x.startswith("| s | 100 | reflex |"))
    assert summary.endswith("| 0.200 ± 0.141 |")
    assert "| 1 | 0.900 |" in table and table.count("| 0.000 → 0.100 |") == 1
    assert "| 0.000 → 0.300 |" in table
    # a row made before the spec asked for the check shows none, and the summary no mean over part of the seeds
    rows[1].pop("check")
    assert next(x for x in bench.render(spec, rows, ROOT / "x.toml").splitlines()
                if x.startswith("| s | 100 | reflex |")).endswith("| - |")
    assert "test by exact" not in bench.render(_spec_for(tmp_path), rows, ROOT / "x.toml")  # only when asked


def test_a_judged_row_shows_its_judge_on_known_answers_and_its_self_agreement(tmp_path: Path) -> None:
    """Each row of a judged table says how far its judge could be trusted in that run: the known answers it got
    right (and whether the run warned) and the SD of one verdict; a table without a judge has no such column."""
    spec = _spec_for(tmp_path)
    known = {"n": 5, "references_passed": 3, "foils_failed": 5, "warning": None}
    rows = [_row("reflex", 1, 0.5, judge={"known": known, "self_agreement_sd": 0.21}),
            _row("reflex", 2, 0.5, judge={"known": {**known, "references_passed": 1, "warning": "w"},
                                          "self_agreement_sd": None})]
    table = bench.render(spec, rows, ROOT / "x.toml")
    assert "judge: known answers right · self-agreement SD |" in table
    assert table.count("| 8 of 10 · 0.210 |") == 1 and table.count("| 6 of 10 (warned) · - |") == 1
    assert "known answers right" not in bench.render(spec, [_row("reflex", 1, 0.5)], ROOT / "x.toml")


def test_the_check_rescores_each_prompts_recorded_test_outputs_by_the_check_metric(tmp_path: Path) -> None:
    """The check reads the run's own record (the store's evals, by the starting and returned prompts' keys) and
    scores each prompt's test outputs, not the other's, and not its val outputs."""
    from reflexopt.evaluate import CaseResult
    from reflexopt.store import RunStore, prompt_key

    start, best = "Here is a sentence. {input}\n", "Rewrite it in the passive voice. {input}\n"
    store = RunStore.create({}, run_dir=tmp_path / "run")
    ideal = "The cat was seen by the dog."
    for key, split, outs in ((start, "test", ["The dog saw the cat.", "The dog saw the cat."]),
                             (best, "test", [ideal, "The dog saw the cat."]),
                             (best, "val", [ideal, ideal])):
        for i, out in enumerate(outs):
            store.add_eval(prompt_key(key), split, CaseResult(str(i), "The dog saw the cat.", out, ideal, 1.0, True), 2)
    store.write_summary({"baseline_prompt": start, "best_prompt": best})
    runner = bench.Runner({"check": ["exact", "F1"]}, argparse.Namespace(code=None, work=str(tmp_path),
                                                                         allow_dirty=True))
    got = runner.check(tmp_path / "run")
    assert got["exact"] == {"start": 0.0, "best": 0.5}
    assert 0 < got["F1"]["start"] < got["F1"]["best"] < 1  # the metric's own name as the spec gave it



def test_an_archived_run_comes_back_in_another_work_folder_without_its_cache(tmp_path: Path) -> None:
    """keep_run archives what a later probe reads; restore_run puts it back where bench.py looks for the home, and
    leaves a home already there alone."""
    home = tmp_path / "work" / "abc1234" / "home-s-reflex-100-1"
    run = home / "runs" / "20261206-000000-abcd"
    (run / "candidates").mkdir(parents=True)
    for name, text in (("summary.json", "{}"), ("candidates.jsonl", '{"id": "t1"}\n'), ("evals.jsonl", "e\n"),
                       ("study.db", "s"), ("candidates/t1.md", "Say it. {input}\n")):
        (run / name).write_text(text, encoding="utf-8")
    (home / "cache.sqlite").write_text("c", encoding="utf-8")
    (home / "runs" / "unfinished").mkdir()  # no summary: not a run to keep
    kept = tmp_path / "kept"
    assert bench.keep_run(home, kept) == kept / "home-s-reflex-100-1.tar.gz"

    other = tmp_path / "elsewhere" / "abc1234" / home.name
    assert bench.restore_run(other, kept)
    back = other / "runs" / run.name
    assert sorted(p.relative_to(back).as_posix() for p in back.rglob("*") if p.is_file()) == \
        ["candidates.jsonl", "candidates/t1.md", "evals.jsonl", "summary.json"]
    assert (back / "candidates" / "t1.md").read_text(encoding="utf-8") == "Say it. {input}\n"
    assert not (other / "cache.sqlite").exists() and not (other / "runs" / "unfinished").exists()
    (back / "evals.jsonl").write_text("changed\n", encoding="utf-8")
    assert bench.restore_run(other, kept) and (back / "evals.jsonl").read_text(encoding="utf-8") == "changed\n"
    assert not bench.restore_run(tmp_path / "elsewhere" / "abc1234" / "home-s-reflex-100-2", kept)


def test_a_balanced_spec_computes_the_constant_answer_on_the_balanced_split(tmp_path: Path) -> None:
    """With `--balanced` in the spec's args the runs split val and test with as many cases of each label, so the
    table's constant answer (and the hand-written rows' split files) must come from that split: about 0.75 on
    this three-in-four set plainly, exactly 0.5 balanced."""
    rows = [_row("reflex", 1, 0.5), _row("reflex", 2, 0.5)]
    plain = _cells(bench.compact(_spec_for(tmp_path), rows, 100), "s")[1]
    even = _spec_for(tmp_path, args=["--metric", "contains", "--balanced"])
    assert float(plain) > 0.7 and _cells(bench.compact(even, rows, 100), "s")[1] == "0.500"


def _running(marker: str) -> list[int]:
    """The processes whose command line names `marker`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_stopping_the_runner_stops_the_run_it_is_waiting_on(tmp_path: Path, openai_server: FakeOpenAI) -> None:
    """`kill` on bench.py (SIGTERM) also ends the `reflexopt optimize` it started: a run left behind goes on
    paying for calls and competing for the cores with the next benchmark."""
    asked, release = threading.Event(), threading.Event()

    def answer(req: dict[str, Any]) -> str:
        asked.set()
        release.wait(60)
        return "positive"

    openai_server.responder = answer
    spec = _spec_for(tmp_path, seeds=[1], budgets=[40])
    spec["args"] += ["--api-base", openai_server.url]
    spec["arms"] = [{"name": "reflex", "args": []}]
    spec_path = tmp_path / "t.toml"
    spec_path.write_text(_toml(spec), encoding="utf-8")
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), str(spec_path), "--jsonl", str(tmp_path / "t.jsonl"),
           "--out", str(tmp_path / "t.md"), "--work", str(tmp_path / "work"), "--allow-dirty"]
    runner = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert asked.wait(120), "the run never called the model"
        assert _running(str(tmp_path / "labels.jsonl"))  # the optimize run, waiting on its first answer
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(30) != 0
        deadline = time.monotonic() + 15
        while _running(str(tmp_path / "labels.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _running(str(tmp_path / "labels.jsonl"))
    finally:
        release.set()
        if runner.poll() is None:
            runner.kill()


def test_the_screen_counts_a_set_only_where_the_hand_written_prompt_beats_every_constant_answer_on_val(
        tmp_path: Path) -> None:
    """`screen = true`: a set counts for the bar only if on every seed the best hand-written prompt's val score is
    above the val share of the val split's most common label (about 0.75 on this three-in-four set); one seed at
    or below it, or a seed not yet run, and the set does not count."""
    spec = _spec_for(tmp_path, screen=True, arms=[{"name": "reflex", "args": []},
                                                  {"name": "hand-written", "kind": "handwritten"}])
    share = bench.val_constant(spec["sets"][0], [1, 2, 3])
    assert share is not None and all(0.6 < v < 0.9 for v in share.values())

    def verdict(vals: dict[int, float]) -> str:
        rows = [_row("reflex", seed, 0.9) for seed in (1, 2, 3)] + [_row("hand-written", seed, v)
                                                                    for seed, v in vals.items()]
        table = bench.render(spec, rows, ROOT / "x.toml")
        return _cells(table.split("## Screen")[1], "s | all")[-1]

    assert verdict({seed: share[seed] + 0.01 for seed in (1, 2, 3)}) == "**counts** for the bar"
    assert verdict({1: share[1] + 0.01, 2: share[2], 3: share[3] + 0.01}) == "does **not** count for the bar"
    assert verdict({1: share[1] + 0.01, 2: share[2] + 0.01}) == "not yet screened"
    assert "## Screen" not in bench.render(_spec_for(tmp_path), [_row("reflex", 1, 0.5)], ROOT / "x.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('title = "T"\nmodel = "m"\nseeds = [1]\nbudgets = [1]\nscreen = true\n'
                   '[[sets]]\nname = "s"\n[[arms]]\nname = "reflex"\n', encoding="utf-8")
    with pytest.raises(SystemExit, match="hand-written"):
        bench.load_spec(bad)
