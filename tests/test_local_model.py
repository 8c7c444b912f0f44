"""The real embedded model (llama-cpp-python server + SmolLM2-135M), end to end. Few and small."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLES, browse_offline, ctrl_c_reaches, require, write_jsonl

pytestmark = pytest.mark.slow

require("llama_cpp", "the slow tests run the embedded model: the `local` extra", load=False)


def _children_serving(parent: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if "llama_cpp.server" in cmd and ppid == parent:
            pids.append(int(d.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "REFLEXOPT_HOME": str(home)}


def test_eval_on_embedded_model_then_cached(tmp_path: Path) -> None:
    rows = [json.loads(x) for x in (EXAMPLES / "reviews" / "data.jsonl").read_text().splitlines()[:6]]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    prompt = tmp_path / "p.md"
    prompt.write_text("Is this review positive or negative? Answer with one word.\n\nReview: {input}\nAnswer:")
    cmd = [sys.executable, "-m", "reflexopt", "eval", str(data), str(prompt), "--json", "--max-tokens", "8"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path / "h"), timeout=600)
    assert first.returncode == 0, first.stderr
    s = json.loads(first.stdout)
    assert s["n_cases"] == 6 and s["n_scored"] == 6 and s["errors"] == 0 and s["model_calls"] == 6
    assert s["cost_usd"] == 0 and s["completion_tokens"] > 0 and s["latency_p50_s"] > 0
    second = json.loads(subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path / "h"),
                                       timeout=600).stdout)
    assert second["model_calls"] == 0 and second["cached_calls"] == 6 and second["score"] == s["score"]


def test_eval_against_the_prompt_it_replaces_on_the_embedded_model(tmp_path: Path) -> None:
    """Both prompts answer the same 16 reviews; swapped, the verdict swaps, from the cache, and the exit code is 1
    exactly when the prompt evaluated is significantly worse."""
    rows = [json.loads(x) for x in (EXAMPLES / "reviews" / "data.jsonl").read_text().splitlines()[:16]]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    named = tmp_path / "named.md"
    named.write_text("Is this review positive or negative? Answer with one word.\n\nReview: {input}\nAnswer:")
    vague = EXAMPLES / "reviews" / "prompt.md"
    runs = {}
    for new, old in ((named, vague), (vague, named)):
        cmd = [sys.executable, "-m", "reflexopt", "eval", str(data), str(new), "--against", str(old), "--json",
               "--max-tokens", "8", "--report", str(tmp_path / f"{new.stem}.html")]
        r = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path / "h"), timeout=600)
        s = json.loads(r.stdout)
        a = s["against"]
        assert a["paired"] == 16 and a["prompt"] == str(old) and s["gate"]["passed"] == (a["verdict"] != "worse")
        assert r.returncode == (1 if a["verdict"] == "worse" else 0), r.stderr
        assert len(a["worst"]) == min(5, a["worse_cases"]) and a["prompt_tokens_per_case"]["new"] > 0
        runs[new.name] = s
    first, second = runs["named.md"], runs["prompt.md"]
    assert first["model_calls"] == 32 and second["model_calls"] == 0  # the second run's answers are cached
    a, b = first["against"], second["against"]
    assert (a["old_score"], a["new_score"], a["delta"]) == (b["new_score"], b["old_score"], -b["delta"])
    assert (a["better_cases"], a["worse_cases"]) == (b["worse_cases"], b["better_cases"])
    assert {a["verdict"], b["verdict"]} in ({"better", "worse"}, {"no significant difference"})
    seen = browse_offline(tmp_path / "named.html")  # the report opens offline and shows the comparison
    assert seen["requests"] == [(tmp_path / "named.html").as_uri()] and seen["problems"] == []
    assert f"{a['worse_cases']} cases worse, {a['better_cases']} better" in seen["text"]


def test_eval_against_with_the_embedded_model_as_judge_shows_the_references_too(tmp_path: Path) -> None:
    """Real verdicts: the change by the judge and by the references (contains, for labels) on the same answers."""
    rows = [json.loads(x) for x in (EXAMPLES / "reviews" / "data.jsonl").read_text().splitlines()[:6]]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    named = tmp_path / "named.md"
    named.write_text("Is this review positive or negative? Answer with one word.\n\nReview: {input}\nAnswer:")
    cmd = [sys.executable, "-m", "reflexopt", "eval", str(data), str(named), "--against",
           str(EXAMPLES / "reviews" / "prompt.md"), "--judge", "local/smollm2", "--judge-criteria", "classification",
           "--self-agreement", "0", "--max-tokens", "8", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path / "h"), timeout=900)
    s = json.loads(r.stdout)
    ref = s["against"]["reference"]
    assert ref["metric"] == "contains" and ref["n"] == 6 and 0 <= ref["baseline"] <= 1 and 0 <= ref["best"] <= 1
    assert ref["disagrees"] == (ref["delta"] * s["against"]["delta"] <= 0 and abs(ref["delta"]) >= 0.05
                                and (s["against"]["delta"] != 0 or ref["p_value"] < 0.05))


def test_a_custom_metrics_feedback_on_the_embedded_models_answers(tmp_path: Path) -> None:
    """A custom metric that returns (score, feedback) scores the real model's answers; the feedback is kept with
    each case as its reasoning (what the diagnosis and rewrites read) and the run goes on as with a bare score."""
    rows = [json.loads(x) for x in (EXAMPLES / "reviews" / "data.jsonl").read_text().splitlines()[:20]]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    metric = tmp_path / "fb.py"
    metric.write_text("def score(output, case):\n"
                      "    ok = case.ideal.lower() in output.lower()\n"
                      "    said = output.strip()[:40]\n"
                      "    return (1.0, '') if ok else (0.0, f'FB: wanted {case.ideal!r}, said {said!r}')\n")
    prompt = tmp_path / "p.md"
    prompt.write_text("Is this review positive or negative?\n")
    r = subprocess.run([sys.executable, "-m", "reflexopt", "optimize", str(data), str(prompt), "--metric",
                        f"{metric}:score", "--max-tokens", "8", "--max-trials", "1", "--json", "--run-dir",
                        str(tmp_path / "run")], capture_output=True, text=True, env=_env(tmp_path / "h"), timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "error" not in json.loads(r.stdout)
    evals = [json.loads(x) for x in (tmp_path / "run" / "evals.jsonl").read_text().splitlines()]
    failed = [e for e in evals if e.get("passed") is False]
    assert failed and all(e["reasoning"].startswith("FB: wanted ") for e in failed)
    assert all(not e.get("reasoning") for e in evals if e.get("passed"))


def test_a_python_function_as_metric_on_the_embedded_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python API with `metric=fn` on the real embedded model: the function sees its real answers and the
    run finishes with a verdict."""
    import reflexopt as ro

    monkeypatch.setenv("REFLEXOPT_HOME", str(tmp_path / "h"))
    rows = [json.loads(x) for x in (EXAMPLES / "reviews" / "data.jsonl").read_text().splitlines()[:20]]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    prompt = tmp_path / "p.md"
    prompt.write_text("Is this review positive or negative?\n")
    answers: list[str] = []

    def names_it(output: str, case: Any) -> tuple[float, str]:
        answers.append(output)
        ok = case.ideal.lower() in output.lower()
        return (1.0, "") if ok else (0.0, f"wanted {case.ideal!r}")

    r = ro.optimize(str(data), str(prompt), metric=names_it, max_trials=1, run_dir=tmp_path / "run")
    assert answers and any(a.strip() for a in answers) and r.model_calls > 0
    assert 0.0 <= r.best_test <= 1.0 and r.stop_reason


def test_align_on_the_embedded_model_as_judge(tmp_path: Path) -> None:
    """`reflexopt align` through the real model layer: the embedded model judges the example's graded responses
    under the starting and a candidate rubric, the verdict compares their agreement with people on test, and the
    tuned rubric file is one `--judge-criteria` reads."""
    from reflexopt.judge import load_rubric

    out = tmp_path / "aligned.md"
    r = subprocess.run([sys.executable, "-m", "reflexopt", "align", str(EXAMPLES / "judge-check" / "graded.jsonl"),
                        "--responses", "response", "--human", "human", "--judge", "local/smollm2",
                        "--judge-criteria", "summary", "--max-trials", "1", "-o", str(out), "--json"],
                       capture_output=True, text=True, env=_env(tmp_path / "h"), timeout=1500)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["model_calls"] > 0 and 0.0 <= res["baseline_test"] <= 1.0 and res["trials"] == 1
    tuned, start = load_rubric(str(out)), load_rubric("summary")
    assert (tuned.low, tuned.high, tuned.pass_score) == (start.low, start.high, start.pass_score)
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_server_stops_when_the_run_is_interrupted_or_killed(tmp_path: Path, sig: signal.Signals) -> None:
    prompt = tmp_path / "p.md"
    prompt.write_text("Write a long essay about this review.")
    proc = subprocess.Popen([sys.executable, "-m", "reflexopt", "eval", str(EXAMPLES / "reviews" / "data.jsonl"),
                             str(prompt)], env={**_env(tmp_path / "h"), "REFLEXOPT_LOCAL_THREADS": "1"},
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=ctrl_c_reaches)
    try:
        deadline = time.monotonic() + 300
        servers: list[int] = []
        while time.monotonic() < deadline and not servers:
            servers = _children_serving(proc.pid)
            time.sleep(0.5)
        assert servers, "the local server never started"
        cmd = Path(f"/proc/{servers[0]}/cmdline").read_bytes().split(b"\0")
        assert cmd[cmd.index(b"--n_threads") + 1] == b"1"  # REFLEXOPT_LOCAL_THREADS reached the server
        time.sleep(3)
        proc.send_signal(sig)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in servers):
            time.sleep(0.2)
        assert not any(_alive(p) for p in servers), "the local model server outlived reflexopt"
        if sig == signal.SIGINT:
            assert proc.returncode == 130
    finally:
        if proc.poll() is None:
            proc.kill()


def test_compare_on_embedded_model_with_two_settings(tmp_path: Path) -> None:
    rows = [json.loads(x) for x in (EXAMPLES / "reviews" / "data.jsonl").read_text().splitlines()[:30]]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    prompt = tmp_path / "p.md"
    prompt.write_text("Is this review positive or negative?\n")
    cmd = [sys.executable, "-m", "reflexopt", "compare", str(data), str(prompt), "-m", "local/smollm2",
           "-m", "local/smollm2@temperature=0.9", "--max-tokens", "8", "--max-trials", "2", "--transfer"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path / "h"), timeout=900)
    assert r.returncode == 0, r.stderr
    assert "tuned (95% CI)" in r.stdout and "transfer" in r.stdout and "recommendation:" in r.stdout
    assert "local/smollm2@temperature=0.9" in r.stdout


def test_report_of_a_real_run_opens_offline_in_chromium(tmp_path: Path) -> None:
    rows = [json.loads(x) for x in (EXAMPLES / "reviews" / "data.jsonl").read_text().splitlines()[:24]]
    rows[0]["input"] = "<script>alert(1)</script> great camera"
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    prompt = tmp_path / "p.md"
    prompt.write_text("Is this review positive or negative?\n")
    report = tmp_path / "report.html"
    r = subprocess.run([sys.executable, "-m", "reflexopt", "optimize", str(data), str(prompt), "--max-tokens", "8",
                        "--max-trials", "2", "--json", "--report", str(report)], capture_output=True, text=True,
                       env=_env(tmp_path / "h"), timeout=900)
    assert r.returncode == 0, r.stderr
    seen = browse_offline(report)
    assert seen["requests"] == [report.as_uri()] and seen["problems"] == []
    assert "Score trajectory" in seen["text"] and "Calls, tokens, cost and time" in seen["text"]
    assert seen["nested"] == 0 and seen["points"] >= 1


@pytest.mark.parametrize("strategy", ["mipro", "gepa", "simba"])
def test_dspy_strategy_on_the_embedded_model(strategy: str, tmp_path: Path) -> None:
    """DSPy's optimizers through reflexopt's model layer on the real embedded model: replies parse (stock DSPy
    scores 0 with SmolLM2), the budget holds, the run is in the history and the report, a re-run pays nothing."""
    rows = [json.loads(x) for x in (EXAMPLES / "reviews" / "data.jsonl").read_text().splitlines()[:30]]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    prompt = tmp_path / "p.md"
    prompt.write_text("Is this review positive or negative?\n")
    report = tmp_path / "report.html"
    cmd = [sys.executable, "-m", "reflexopt", "optimize", str(data), str(prompt), "--strategy", strategy,
           "--max-tokens", "8", "--max-calls", "120", "--json"]
    r = subprocess.run([*cmd, "--report", str(report)], capture_output=True, text=True, env=_env(tmp_path / "h"),
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res["best_test"] > 0 and 0 < res["model_calls"] <= 120
    # DSPy's own prints, progress bars and log lines stay off the terminal (they leaked into every run)
    assert not [m for m in ("Bootstrapping", "it/s]", "WARNING", "ERROR", "Average Metric") if m in r.stderr], \
        r.stderr[-2000:]
    listed = subprocess.run([sys.executable, "-m", "reflexopt", "runs", "list", "--json"], capture_output=True,
                            text=True, env=_env(tmp_path / "h"), timeout=120)
    assert res["run_id"] in listed.stdout and '"done"' in listed.stdout, listed.stdout
    assert f"strategy {strategy}" in report.read_text(encoding="utf-8")
    again = json.loads(subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path / "h"),
                                      timeout=900).stdout)
    assert again["model_calls"] == 0 and again["best_test"] == res["best_test"]


def test_the_pipeline_example_on_the_embedded_model(tmp_path: Path) -> None:
    """The README's pipeline command, smaller: the example app (openai SDK, OPENAI_BASE_URL) runs in worker
    processes against the embedded model through reflexopt's endpoint; both prompts are tried, its calls are
    within --max-calls and counted, and the same command again pays nothing."""
    ex = EXAMPLES / "pipeline"
    cmd = [sys.executable, "-m", "reflexopt", "optimize", str(ex / "data.jsonl"), "--pipeline", f"{ex / 'app.py'}:run",
           "--prompt", f"answer={ex / 'prompts' / 'answer.md'}", "--prompt", f"check={ex / 'prompts' / 'check.md'}",
           "--metric", "contains", "--max-trials", "2", "--max-calls", "400", "--json"]
    first = subprocess.run([*cmd, "--run-dir", str(tmp_path / "a"), "-o", str(tmp_path / "tuned")],
                           capture_output=True, text=True, env=_env(tmp_path / "h"), timeout=900)
    assert first.returncode == 0, first.stderr
    r = json.loads(first.stdout)
    assert 0 < r["model_calls"] and r["unspent_calls"] is not None and r["model_calls"] <= 400
    assert sorted(p.name for p in (tmp_path / "tuned").iterdir()) == ["answer.md", "check.md"]
    cands = [json.loads(x) for x in (tmp_path / "a" / "candidates.jsonl").read_text().splitlines()]
    assert {c["params"].get("target") for c in cands if c["id"] != "baseline"} == {"answer", "check"}
    again = subprocess.run([*cmd, "--run-dir", str(tmp_path / "b")], capture_output=True, text=True,
                           env=_env(tmp_path / "h"), timeout=900)
    assert again.returncode == 0, again.stderr
    rerun = json.loads(again.stdout)
    assert rerun["model_calls"] == 0 and (rerun["best_candidate"], rerun["best_test"]) == (r["best_candidate"],
                                                                                           r["best_test"])


def test_eval_of_the_pipeline_example_against_an_old_answer_prompt_on_the_embedded_model(tmp_path: Path) -> None:
    """`eval --pipeline` runs the example app on the embedded model for both versions of its answer prompt, and
    the check prompt is the same on both sides: its calls are the same requests, answered from the cache."""
    ex = EXAMPLES / "pipeline"
    rows = [json.loads(x) for x in (ex / "data.jsonl").read_text().splitlines()[:12]]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    named = tmp_path / "answer.md"
    named.write_text("Is this review positive or negative? Answer with one word.")
    cmd = [sys.executable, "-m", "reflexopt", "eval", str(data), "--pipeline", f"{ex / 'app.py'}:run",
           "--prompt", f"answer={named}", "--prompt", f"check={ex / 'prompts' / 'check.md'}", "--metric", "contains",
           "--against", f"answer={ex / 'prompts' / 'answer.md'}", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path / "h"), timeout=900)
    s = json.loads(r.stdout)
    a = s["against"]
    assert r.returncode == (1 if a["verdict"] == "worse" else 0), r.stderr
    assert s["n_cases"] == 12 and a["paired"] == 12 and s["errors"] == 0
    # each version makes two calls a case; how many of the second step's repeat depends on the first's answers
    assert 24 < s["model_calls"] + s["cached_calls"] <= 48 and s["model_calls"] <= 48
    assert a["prompt"] == f"answer={ex / 'prompts' / 'answer.md'}"


def test_judge_check_on_the_embedded_model_with_a_schema_grammar(tmp_path: Path) -> None:
    """The embedded model as judge of the recorded responses in examples/judge-check: the verdict is asked with a
    schema (llama-cpp-python turns it into a grammar), so every verdict parses; self-agreement comes from real
    redraws; agreement with the people's labels is reported. (SmolLM2 is no judge: the numbers are mechanics.)"""
    data = EXAMPLES / "judge-check" / "graded.jsonl"
    cmd = [sys.executable, "-m", "reflexopt", "eval", str(data), "--responses", "response", "--human", "human",
           "--judge", "local/smollm2", "--judge-criteria", "summary", "--self-agreement", "4", "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path / "h"), timeout=900)
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    j = s["judge"]
    assert j["structured"] == "json_object+schema"
    assert j["verdicts"] == 12 and j["parse_errors"] == 0 and s["n_scored"] == 12
    # 4 cases re-judged twice at temperature 0.7: a 135M model's sampled verdict can run past its token cap and not
    # parse (3 of 4 cases agreed on one 2-core machine, 4 of 4 on another, with the same code), and such a case is
    # left out of the self-agreement
    assert 1 <= j["self_agreement"]["n"] <= 4
    assert s["model_calls"] >= 12 + 8  # 12 verdicts, then the redraws (an unparsed one is asked again)
    h = s["human_agreement"]
    assert h["n"] == 12 and h["kind"] == "scores" and "spearman" in h and "kappa" in h
    assert p.stderr.count("\n") <= 3, p.stderr  # no library warnings or progress bars leak


def test_copies_fail_and_matches_pass_unjudged_beside_real_verdicts(tmp_path: Path) -> None:
    """Recorded answers, two of them copies of their input where the reference changes it: those fail without a
    call (the rubric's lowest score); one says what its reference says: it passes without a call; the last gets
    the embedded judge's real verdict. The judge is then asked about the known answers (each case's reference and
    the next case's), 8 real calls; the self-agreement sample (the first case, a copy) has no verdict to redraw."""
    rows = [{"input": "The cat chased the dog.", "ideal": "The dog was chased by the cat.",
             "response": "The cat chased the dog."},
            {"input": "The boy kicked the ball.", "ideal": "The ball was kicked by the boy.",
             "response": "the boy kicked the ball"},
            {"input": "The chef cooked the meal.", "ideal": "The meal was cooked by the chef.",
             "response": "The meal was cooked by the chef."},
            {"input": "The girl wrote the letter.", "ideal": "The letter was written by the girl.",
             "response": "A letter."}]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    cmd = [sys.executable, "-m", "reflexopt", "eval", str(data), "--responses", "response", "--judge",
           "local/smollm2", "--judge-criteria", "correctness", "--self-agreement", "1", "-o",
           str(tmp_path / "cases.jsonl"), "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path / "h"), timeout=900)
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    j = s["judge"]
    assert (j["copies"], j["matches"], j["verdicts"]) == (2, 1, 1)
    # 4 references and 4 foils asked; a pair counts when both verdicts parsed (SmolLM2 may miss one)
    assert 1 <= j["known"]["n"] <= 4 and s["model_calls"] >= 1 + 8
    cases = [json.loads(line) for line in (tmp_path / "cases.jsonl").read_text().splitlines()]
    assert [c["score"] == 0.0 and c["category"] == "copy of the input" for c in cases[:2]] == [True, True]
    assert cases[2]["score"] == 1.0 and "passed without asking the judge" in cases[2]["reasoning"]
    assert "without asking" not in cases[3]["reasoning"]
    assert p.stderr.count("\n") <= 3, p.stderr


def test_known_answers_probe_list_references_with_the_embedded_judge(tmp_path: Path) -> None:
    """List references: besides each reference and a foil, the embedded judge is asked about the reference
    reordered, a near miss (its last item swapped for another case's) and the reference padded with that item, 5
    real calls per case, recorded in the judge's record whatever SmolLM2 made of them."""
    lists = ["bear, bird, cow", "goat, lion, seal", "wolf, frog, mole"]
    rows = [{"input": f"Name the animals in: {ref}, table, chair.", "ideal": ref, "response": "bear"}
            for ref in lists]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    cmd = [sys.executable, "-m", "reflexopt", "eval", str(data), "--responses", "response", "--judge",
           "local/smollm2", "--judge-criteria", "correctness", "--self-agreement", "1", "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path / "h"), timeout=900)
    assert p.returncode == 0, p.stderr
    known = json.loads(p.stdout)["judge"]["known"]
    # a probe counts when its verdict parsed (and, for a near miss, its reference's too)
    assert 1 <= known["reordered"] <= 3 and 1 <= known["near_misses"] <= 3 and known["padded"] <= 3, known
    assert "reordered lists" in known["summary"] and "near misses" in known["summary"]
    assert json.loads(p.stdout)["model_calls"] >= 3 + 15


def test_a_gguf_file_as_local_judge_beside_the_embedded_task_model(tmp_path: Path) -> None:
    """`--judge local/PATH.gguf`: reflexopt serves that file itself, beside the task model's server (a copy of the
    embedded model's file here: another file is another server), and the two take turns."""
    from reflexopt.models.local import model_file

    judge = tmp_path / "judge.gguf"
    judge.write_bytes(model_file("smollm2").read_bytes())
    rows = [{"input": f"Report {i}: a phishing mail reached {i} staff; none clicked.", "ideal": f"{i} staff got a "
             "phishing mail; nobody clicked."} for i in range(3)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    prompt = tmp_path / "p.md"
    prompt.write_text("Summarise this report in one sentence.\n\n{input}")
    cmd = [sys.executable, "-m", "reflexopt", "eval", str(data), str(prompt), "--judge", f"local/{judge}",
           "--judge-criteria", "summary", "--max-tokens", "24", "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path / "h"), timeout=900)
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["n_scored"] == 3 and s["judge"]["verdicts"] == 3 and s["errors"] == 0
    log = (tmp_path / "h" / "logs" / "llama-server.log").read_text(errors="replace")
    assert log.count("Started server process") == 2  # one server per model file
    missing = subprocess.run([*cmd[:6], "--judge", f"local/{tmp_path}/none.gguf", *cmd[8:]], capture_output=True,
                             text=True, env=_env(tmp_path / "h"), timeout=300)
    assert missing.returncode != 0 and "none.gguf: no such model file" in missing.stderr
