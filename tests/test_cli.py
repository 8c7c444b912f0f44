"""The CLI as a user runs it: a subprocess, against a real loopback OpenAI-compatible server."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SHARED, FakeOpenAI, write_jsonl


def cli(*args: str, home: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REFLEXOPT_HOME": str(home), "OPENAI_API_KEY": "sk-test-key-0000000000",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.run([sys.executable, "-m", "reflexopt", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    data = write_jsonl(tmp_path / "d.jsonl", [{"input": f"text {i}", "ideal": "positive" if i % 2 else "negative"}
                                             for i in range(8)])
    prompt = tmp_path / "p.md"
    prompt.write_text("Classify the sentiment: {input}\n")
    return {"data": data, "prompt": prompt}


def test_eval_json_then_fully_cached(files: dict[str, Path], openai_server: FakeOpenAI, tmp_path: Path) -> None:
    openai_server.responder = lambda req: "positive" if int(req["messages"][-1]["content"][-1]) % 2 else "nope"
    args = ["eval", str(files["data"]), str(files["prompt"]), "-m", "openai/test", "--api-base", openai_server.url,
            "--json", "-o", str(tmp_path / "cases.jsonl")]
    first = cli(*args, home=tmp_path / "h")
    assert first.returncode == 0, first.stderr
    s = json.loads(first.stdout)
    for key in ("score", "ci95", "n_cases", "model_calls", "cached_calls", "prompt_tokens", "completion_tokens",
                "cost_usd", "latency_p50_s", "latency_p95_s", "errors"):
        assert key in s
    assert s["score"] == 0.5 and s["n_cases"] == 8 and s["model_calls"] == 8 and s["cached_calls"] == 0
    assert s["ci95"][0] <= 0.5 <= s["ci95"][1]
    rows = [json.loads(x) for x in (tmp_path / "cases.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {"output", "score", "ideal", "latency_s"} <= set(rows[0])
    second = json.loads(cli(*args, home=tmp_path / "h").stdout)
    assert second["model_calls"] == 0 and second["cached_calls"] == 8 and second["score"] == 0.5
    assert len(openai_server.requests) == 8
    # every answer from the cache: the latency shown is the one those answers had when they were paid for
    assert "latency_from_cache" not in s and second["latency_from_cache"] is True
    assert (second["latency_p50_s"], second["latency_p95_s"]) == (s["latency_p50_s"], s["latency_p95_s"])
    table = cli(*args[:-3], "--report", str(tmp_path / "r.html"), home=tmp_path / "h")
    note = "every answer came from the cache: latency as measured when each was paid for"
    assert note in " ".join(table.stdout.split()) and f"‡ {note}" in (tmp_path / "r.html").read_text()
    assert "0 prompt + 0 completion paid in this run" in table.stdout  # not the prompt's size


def test_eval_table(files: dict[str, Path], openai_server: FakeOpenAI, tmp_path: Path) -> None:
    r = cli("eval", str(files["data"]), str(files["prompt"]), "-m", "openai/test", "--api-base", openai_server.url,
            home=tmp_path / "h")
    assert r.returncode == 0, r.stderr
    assert "score" in r.stdout and "95% CI" in r.stdout and "from cache" in r.stdout
    assert "scoring with metric 'contains'" in r.stderr


def test_security_incidents_rouge_l_scores_all_rows(openai_server: FakeOpenAI, tmp_path: Path) -> None:
    openai_server.responder = lambda req: "A phishing incident compromised accounts; they were locked."
    prompt = tmp_path / "p.md"
    prompt.write_text("Summarize this security incident report.")
    r = cli("eval", str(SHARED / "security_incidents.jsonl"), str(prompt), "--metric", "rouge-l", "-m", "openai/t",
            "--api-base", openai_server.url, "--json", home=tmp_path / "h")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["n_cases"] == 100 and s["n_scored"] == 100 and s["errors"] == 0 and 0 < s["score"] < 1
    first = openai_server.requests[0][1]["messages"]
    assert first[0] == {"role": "system", "content": "Summarize this security incident report."}


BAD = {
    "invalid json": (b'{"input": "a", "ideal": "x"}\n{"input": oops}\n', "d.jsonl:2: invalid JSON"),
    "missing field": (b'{"input": "a", "ideal": "x"}\n{"ideal": "y"}\n', "d.jsonl:2: row has no input"),
    "empty file": (b"", "d.jsonl: the file is empty"),
    "non utf8": (b'{"input": "caf\xe9", "ideal": "x"}\n', "d.jsonl:1: bytes are not UTF-8"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_data_exit_2_one_line(kind: str, tmp_path: Path) -> None:
    content, needle = BAD[kind]
    (tmp_path / "d.jsonl").write_bytes(content)
    (tmp_path / "p.md").write_text("Hi {input}")
    r = cli("eval", str(tmp_path / "d.jsonl"), str(tmp_path / "p.md"), "-m", "fake/none", home=tmp_path / "h")
    _one_line_error(r, needle)


def _one_line_error(r: subprocess.CompletedProcess[str], needle: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, r.stderr
    assert needle in lines[0] and "fix:" in lines[0] and "Traceback" not in r.stderr


def test_other_bad_inputs_exit_2(files: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "h"
    d, p = str(files["data"]), str(files["prompt"])
    _one_line_error(cli("eval", str(tmp_path / "missing.jsonl"), p, home=home), "missing.jsonl: no such file")
    _one_line_error(cli("eval", d, str(tmp_path / "nope.md"), home=home), "nope.md: no such file")
    bad_prompt = tmp_path / "q.md"
    bad_prompt.write_text("Question: {question}")
    _one_line_error(cli("eval", d, str(bad_prompt), "--metric", "exact", home=home), "placeholder {question}")
    _one_line_error(cli("eval", d, p, "-m", "nosuchprovider/model", home=home), "unknown model")
    _one_line_error(cli("eval", d, p, "--metric", "bleu", home=home), "unknown metric 'bleu'")
    _one_line_error(cli("eval", d, p, "--judge", "openai/x", "--judge-criteria", "nope", home=home), "no such rubric")


def test_help_lists_commands(tmp_path: Path) -> None:
    r = cli("--help", home=tmp_path / "h")
    assert r.returncode == 0 and "eval" in r.stdout


def test_optimize_dry_run_makes_no_calls(files: dict[str, Path], openai_server: FakeOpenAI, tmp_path: Path) -> None:
    r = cli("optimize", str(files["data"]), str(files["prompt"]), "-m", "openai/test", "--api-base",
            openai_server.url, "--dry-run", "--json", "--max-calls", "100", home=tmp_path / "h")
    assert r.returncode == 0, r.stderr
    est = json.loads(r.stdout)
    assert 0 < est["calls_estimate"] <= 100 and est["n_train"] + est["n_val"] + est["n_test"] == 8
    assert openai_server.requests == []


def test_optimize_json_and_bad_options(files: dict[str, Path], openai_server: FakeOpenAI, tmp_path: Path) -> None:
    openai_server.responder = lambda req: "positive"
    out = tmp_path / "best.md"
    r = cli("optimize", str(files["data"]), str(files["prompt"]), "-m", "openai/test", "--api-base",
            openai_server.url, "--max-trials", "2", "--json", "-o", str(out), home=tmp_path / "h")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    for key in ("run_id", "baseline_val", "best_val", "baseline_test", "best_test", "delta_ci95", "p_value",
                "significant", "model_calls", "cached_calls", "cost_usd", "trials", "pruned_trials",
                "best_prompt_path"):
        assert key in res
    assert res["best_prompt_path"] == str(out) and out.exists() and res["trials"] == 2
    home = tmp_path / "h"
    d, p = str(files["data"]), str(files["prompt"])
    _one_line_error(cli("optimize", d, p, "--max-time", "soon", home=home), "--max-time 'soon'")
    _one_line_error(cli("optimize", d, p, "--split", "1/2", home=home), "--split '1/2'")
    _one_line_error(cli("optimize", "--resume", "nope-run", home=home), "not a reflexopt run directory")
    # numpy (so optuna) takes seeds from 0 to 2**32 - 1: any other seed was a traceback from the sampler
    for r in (cli("optimize", d, p, "--seed", "-1", home=home),
              cli("compare", d, p, "-m", "openai/a", "-m", "openai/b", "--seed", str(2**32), home=home)):
        assert r.returncode == 2 and "Invalid value for '--seed'" in r.stderr and "Traceback" not in r.stderr
    from pydantic import ValidationError

    from reflexopt.config import DataSpec, OptimizeConfig
    with pytest.raises(ValidationError, match="seed"):
        OptimizeConfig(data=DataSpec(path=d), prompt_path=p, seed=-1)


def test_optimize_balanced_weighs_every_label_alike_on_val_and_test(openai_server: FakeOpenAI,
                                                                    tmp_path: Path) -> None:
    """`--balanced` on a set three in four "negative": val and test hold as many cases of each label, so the
    prompt that answers "negative" to everything scores 0.5 there (0.75 on the plain split), the constant answer's
    bar says so, the run's header names the split, and a resume cannot change it."""
    openai_server.responder = lambda req: "negative"
    data = write_jsonl(tmp_path / "d.jsonl", [{"input": f"text {i}", "ideal": "positive" if i % 4 == 0 else
                                               "negative"} for i in range(80)])
    prompt = tmp_path / "p.md"
    prompt.write_text("Is it positive or negative? {input}\n")
    base = ["optimize", str(data), str(prompt), "-m", "openai/test", "--api-base", openai_server.url,
            "--metric", "contains", "--max-trials", "1"]
    home = tmp_path / "h"
    plain = json.loads(cli(*base, "--json", home=home).stdout)
    r = cli(*base, "--balanced", "--json", home=home)
    assert r.returncode == 0, r.stderr
    even = json.loads(r.stdout)
    assert plain["baseline_test"] == 0.75 and even["baseline_test"] == 0.5 and even["baseline_val"] == 0.5
    assert even["test_labels"]["constant"]["score"] == 0.5
    config = json.loads((home / "runs" / even["run_id"] / "config.json").read_text())
    assert config["balanced"] is True
    shown = cli(*base, "--balanced", "--seed", "1", home=home)
    said = " ".join(shown.stderr.split())
    assert shown.returncode == 0 and "val/test balanced: 7/7 per label" in said, said
    refused = cli("optimize", "--resume", even["run_id"], "--json", home=home)
    assert refused.returncode == 0, refused.stderr  # nothing given: as stored
    assert json.loads(refused.stdout)["baseline_test"] == 0.5
    refused = cli(*base[:1], "--resume", plain["run_id"], "--balanced", home=home)
    assert refused.returncode == 2 and "--balanced" in refused.stderr, refused.stderr
    (tmp_path / "c.yaml").write_text("balanced: true\n")  # the same from a config file
    r = cli(*base, "--seed", "2", "--config", str(tmp_path / "c.yaml"), "--json", home=home)
    assert r.returncode == 0 and json.loads(r.stdout)["baseline_test"] == 0.5, r.stderr


def test_resume_may_extend_the_budget_and_refuses_other_changes(files: dict[str, Path], openai_server: FakeOpenAI,
                                                                tmp_path: Path) -> None:
    """Options given with --resume were silently ignored: `--resume RUN --max-trials 4` (or --max-calls) ran
    nothing more, and `--resume RUN -m OTHER` went on with the first model without a word. A resume may now
    change the budget and outputs (kept in the run's config.json); any other setting is refused by name."""
    openai_server.responder = lambda req: "positive"
    home = tmp_path / "h"
    base = ["-m", "openai/test", "--api-base", openai_server.url]
    r = cli("optimize", str(files["data"]), str(files["prompt"]), *base, "--max-trials", "2", "--json", home=home)
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert first["trials"] == 2
    refused = cli("optimize", "--resume", first["run_id"], "-m", "openai/other", "--seed", "3", home=home)
    assert refused.returncode == 2 and "-m, --seed differ from them" in refused.stderr, refused.stderr
    out = tmp_path / "best.md"
    r = cli("optimize", "--resume", first["run_id"], "--max-trials", "4", "-o", str(out), "--json", home=home)
    assert r.returncode == 0, r.stderr
    more = json.loads(r.stdout)
    assert more["run_id"] == first["run_id"] and more["trials"] == 4 and out.exists()
    config = json.loads((home / "runs" / first["run_id"] / "config.json").read_text())
    assert config["budget"]["max_trials"] == 4 and config["model"]["id"] == "openai/test"
    r = cli("optimize", "--resume", first["run_id"], "--json", home=home)  # nothing given: as stored, no new trial
    assert r.returncode == 0 and json.loads(r.stdout)["trials"] == 4, r.stderr
    # the first command again with --resume: the same values are no change
    r = cli("optimize", str(files["data"]), str(files["prompt"]), *base, "--max-trials", "4", "--resume",
            first["run_id"], "--json", home=home)
    assert r.returncode == 0 and json.loads(r.stdout)["trials"] == 4, r.stderr
    other = tmp_path / "other.md"
    other.write_text("Say it: {input}\n")
    refused = cli("optimize", str(files["data"]), str(other), "--resume", first["run_id"], home=home)
    assert refused.returncode == 2 and "PROMPT differs from them" in refused.stderr, refused.stderr


def test_no_rewrites_never_asks_the_reasoning_model(files: dict[str, Path], openai_server: FakeOpenAI,
                                                     tmp_path: Path) -> None:
    """`--no-rewrites`: the no-LLM operators only (an ablation of what the reasoning model adds, or a run with no
    reasoning model to pay for). Through the real path: the loopback server sees no request for the reasoner."""
    openai_server.responder = lambda req: "positive"
    base = ["optimize", str(files["data"]), str(files["prompt"]), "-m", "openai/test", "--api-base",
            openai_server.url, "--reasoning-model", "openai/reasoner", "--max-trials", "10", "--patience", "10",
            "--json"]
    with_rewrites = cli(*base, home=tmp_path / "a")
    assert with_rewrites.returncode == 0, with_rewrites.stderr
    asked = [req for _, req in openai_server.requests if req.get("model") == "reasoner"]
    assert asked, "without the flag the reasoning model is asked"
    openai_server.requests.clear()
    r = cli(*base, "--no-rewrites", home=tmp_path / "b")
    assert r.returncode == 0, r.stderr
    assert openai_server.requests and not [req for _, req in openai_server.requests if req.get("model") == "reasoner"]
    ops = json.loads(r.stdout)["operators"]
    assert ops and not set(ops) & {"fix", "restructure", "constraints", "compress", "merge"}


def test_eval_against_the_prompt_it_replaces_is_a_ci_gate(files: dict[str, Path], openai_server: FakeOpenAI,
                                                          tmp_path: Path) -> None:
    """The model answers right only under a prompt that names the labels: the change that drops them is worse,
    exit code 1, with the cases it broke; the change that adds them is better, exit code 0."""
    def responder(req: dict) -> str:  # type: ignore[type-arg]
        text = " ".join(m["content"] for m in req["messages"])
        if "positive or negative" not in text:
            return "maybe"
        return "positive" if int(req["messages"][-1]["content"][-1]) % 2 else "negative"

    openai_server.responder = responder
    rows = [{"input": f"text {i}", "ideal": "positive" if i % 2 else "negative"} for i in range(16)]
    data = write_jsonl(tmp_path / "d16.jsonl", rows)
    good, vague = tmp_path / "good.md", tmp_path / "vague.md"
    good.write_text("Answer positive or negative: {input}\n")
    vague.write_text("Here is a text: {input}\n")
    base = ["eval", str(data), "-m", "openai/test", "--api-base", openai_server.url]
    page = tmp_path / "r.html"
    worse = cli(*base, str(vague), "--against", str(good), "--report", str(page), home=tmp_path / "h")
    assert worse.returncode == 1, worse.stderr
    html = page.read_text()
    assert f"Against {good}: 16 cases worse, 0 better" in html and "old prompt output" in html
    assert "<b class=bad>failed</b>" in html and "Prompt diff (old → this)" in html
    assert "<div class='add'>+Here is a text: {input}</div>" in html
    assert "verdict" in worse.stdout and "worse" in worse.stdout and "1.000 -> 0.000" in worse.stdout
    assert "16 worse" in worse.stdout and "was 'negative'" in worse.stdout and "now 'maybe'" in worse.stdout
    assert "error: significantly worse than" in worse.stderr and str(good.name) in worse.stderr
    assert len(openai_server.requests) == 32  # both prompts on every case
    better = cli(*base, str(good), "--against", str(vague), "--json", home=tmp_path / "h")
    assert better.returncode == 0, better.stderr
    s = json.loads(better.stdout)
    assert s["against"]["verdict"] == "better" and s["against"]["delta"] == 1.0 and s["gate"] == {
        "passed": True, "reasons": []}
    assert s["model_calls"] == 0 and s["cached_calls"] == 32  # the same answers, from the cache
    # the same from a config file, the repeatable --against given once as a plain value
    (tmp_path / "c.yaml").write_text(f"eval:\n  against: {vague}\n  fail-under: 0.5\n")
    conf = cli(*base, str(good), "--config", str(tmp_path / "c.yaml"), "--json", home=tmp_path / "h")
    assert conf.returncode == 0 and json.loads(conf.stdout)["against"]["verdict"] == "better", conf.stderr
    under = cli(*base, str(good), "--fail-under", "1", "--json", home=tmp_path / "h")
    assert under.returncode == 0 and json.loads(under.stdout)["gate"]["passed"]
    low = cli(*base, str(vague), "--fail-under", "0.5", "--report", str(page), home=tmp_path / "h")
    assert low.returncode == 1 and "score 0.000 is below --fail-under 0.5" in low.stderr
    html = page.read_text()
    assert "Lowest-scoring cases: 16 below full marks" in html and html.index("case 2 ") < html.index("case 10 ")
    missing = cli(*base, str(good), "--against", str(tmp_path / "nope.md"), home=tmp_path / "h")
    assert missing.returncode == 2 and "nope.md" in missing.stderr
    graded = write_jsonl(tmp_path / "g.jsonl", [{**r, "response": "positive"} for r in rows])
    recorded = cli("eval", str(graded), "--responses", "response", "--metric", "contains", "--against", str(good),
                   home=tmp_path / "h")
    assert recorded.returncode == 2 and "--against compares two prompts" in recorded.stderr


def test_eval_compares_several_prompts_on_the_same_cases(openai_server: FakeOpenAI, tmp_path: Path) -> None:
    """`eval DATA A.md B.md C.md`: every prompt answers every case; each after the first is compared with it pair
    by pair, the p-values Holm-adjusted over the two comparisons; the table, --json, the report and the run
    history carry every prompt's row. A config file's `prompts:` list works as the arguments do; several prompts
    with --against is an error before any call."""
    def responder(req: dict) -> str:  # type: ignore[type-arg]
        text = " ".join(m["content"] for m in req["messages"])
        if "positive or negative" not in text:
            return "maybe"
        return "positive" if int(req["messages"][-1]["content"].split()[-1]) % 2 else "negative"

    openai_server.responder = responder
    data = write_jsonl(tmp_path / "d.jsonl",
                       [{"input": f"text {i}", "ideal": "positive" if i % 2 else "negative"} for i in range(16)])
    a, b, c = tmp_path / "a.md", tmp_path / "b.md", tmp_path / "c.md"
    a.write_text("Here is a text: {input}\n")
    b.write_text("Answer positive or negative: {input}\n")
    c.write_text("Read this text: {input}\n")
    base = ["eval", str(data), "-m", "openai/test", "--api-base", openai_server.url]
    r = cli(*base, str(a), str(b), str(c), "--json", "--report", str(tmp_path / "r.html"), "-o",
            str(tmp_path / "cases.jsonl"), home=tmp_path / "h")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert len(openai_server.requests) == 48  # three prompts on every case
    written = [json.loads(x) for x in (tmp_path / "cases.jsonl").read_text().splitlines()]  # -o: every prompt's
    assert [(w["prompt"], w["score"]) for w in written if w["case_id"] == "1"] == [(str(a), 0.0), (str(b), 1.0),
                                                                                   (str(c), 0.0)]
    assert len(written) == 48
    first, good, same = s["variants"]
    assert (first["prompt"], first["score"], first["change"]) == (str(a), 0.0, None) and s["score"] == 0.0
    assert good["score"] == 1.0 and good["change"]["verdict"] == "better" and good["change"]["delta"] == 1.0
    assert good["change"]["p_value"] == min(1.0, 2 * good["change"]["p_value_raw"])  # the smaller of two, x2
    assert same["change"]["verdict"] == "no significant difference" and same["change"]["p_value"] == 1.0
    assert good["prompt_tokens_per_case"] is not None and good["change"]["correction"] == "Holm over 2"
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "3 prompts on the same cases" in html and "Holm-adjusted" in html and str(b) in html
    saved = json.loads((Path(s["run_dir"]) / "eval.json").read_text())
    assert [v["prompt"] for v in saved["report"]["variants"]] == [str(a), str(b), str(c)]
    from reflexopt.eval_history import load_eval  # the history keeps every prompt's cases, not only the first's

    kept = load_eval(Path(s["run_dir"]))[0].variant_results
    assert [(name, sum(r.score or 0 for r in rs), len(rs)) for name, rs in kept] == [(str(a), 0, 16), (str(b), 16, 16),
                                                                                     (str(c), 0, 16)]
    listed = next(r for r in json.loads(cli("runs", "list", "--json", home=tmp_path / "h").stdout)
                  if r["id"] == Path(s["run_dir"]).name)  # the first prompt, and the best of the others
    assert (listed["baseline"], listed["best"], listed["significant"]) == (0.0, 1.0, True)
    alone = json.loads(cli(*base, str(a), "--json", home=tmp_path / "h").stdout)["run_dir"]
    # a.md's answers were all in the cache: the history says so, not that the eval made no calls
    again = next(r for r in json.loads(cli("runs", "list", "--json", home=tmp_path / "h").stdout)
                 if r["id"] == Path(alone).name)
    assert (again["calls"], again["cached_calls"]) == (0, 16)
    from rich.console import Console

    from reflexopt.cli.render import runs_table
    from reflexopt.runs import info

    shown = Console(width=200, record=True, file=io.StringIO())
    shown.print(runs_table([info(Path(alone))], 200))
    assert "0 (+16 cached)" in shown.export_text()
    from reflexopt.serve import _index  # the web view's list says the same

    assert "<td>0 (+16 cached)</td>" in _index([info(Path(alone))], 5)
    d = json.loads(cli("runs", "diff", Path(s["run_dir"]).name, Path(alone).name, "--prompt", "b.md", "--json",
                       home=tmp_path / "h").stdout)  # b.md of the three against the eval of a.md alone
    assert (d["prompt_a"], d["prompt_b"], d["worse_in_b"], d["common_test_cases"]) == (str(b), "prompt", 16, 16)
    assert "-Answer positive or negative" in d["prompt_diff"] and "+Here is a text" in d["prompt_diff"]
    missing = cli("runs", "diff", Path(s["run_dir"]).name, Path(alone).name, "--prompt", "z.md", home=tmp_path / "h")
    assert missing.returncode != 0 and "scored no prompt 'z.md'" in missing.stderr and "b.md" in missing.stderr
    table = cli(*base, str(a), str(b), home=tmp_path / "h")
    flat = " ".join(table.stdout.replace("│", " ").split())
    assert "2 prompts on the same cases" in flat and "better" in flat and "(the first)" in flat
    (tmp_path / "conf.yaml").write_text(f"prompts: [{a}, {b}]\nmodel: openai/test\n"
                                        f"api-base: {openai_server.url}\n")
    conf = cli("eval", str(data), "--json", "--config", str(tmp_path / "conf.yaml"), home=tmp_path / "h")
    assert conf.returncode == 0, conf.stderr
    assert [v["prompt"] for v in json.loads(conf.stdout)["variants"]] == [str(a), str(b)]
    asked = len(openai_server.requests)
    bad = cli(*base, str(a), str(b), "--against", str(c), home=tmp_path / "h")
    assert bad.returncode == 2 and "several prompts" in bad.stderr and len(openai_server.requests) == asked


def test_runs_rm_and_prune_remove_runs_but_never_a_running_one_a_batch_run_or_the_cache(
        openai_server: FakeOpenAI, tmp_path: Path) -> None:
    """`runs prune --older-than 30` removes the runs started before (with --dry-run, nothing), never one whose
    process still holds its lock or one of a batch, and keeps the response cache; `runs rm` with a ref it must
    refuse removes none of the others named with it; `runs prune` with no filter is an error."""
    from reflexopt.paths import hold_lock

    home = tmp_path / "h"
    openai_server.responder = lambda req: "positive"  # type: ignore[assignment,return-value]
    data = write_jsonl(tmp_path / "d.jsonl", [{"input": f"text {i}", "ideal": "positive"} for i in range(4)])
    (tmp_path / "p.md").write_text("Say it: {input}\n")
    ids = [Path(json.loads(cli("eval", str(data), str(tmp_path / "p.md"), "-m", "openai/t", "--api-base",
                               openai_server.url, "--json", home=home).stdout)["run_dir"]).name for _ in range(3)]
    old = time.time() - 40 * 86400
    for name in ids[:2]:  # two runs of 40 days ago
        os.utime(home / "runs" / name / "config.json", (old, old))
    busy = home / "runs" / "20200101-000000-busy"  # an old run still running: its process holds the lock
    busy.mkdir()
    (busy / "config.json").write_text('{"model": {"id": "m"}, "data": {"path": "d.jsonl"}}')
    os.utime(busy / "config.json", (old, old))
    lock = hold_lock(busy / "lock", "busy", fix="-")
    job = home / "batch" / "b1" / "round-1" / "job-a"  # a batch's run: the batch's folder owns it
    job.mkdir(parents=True)
    (job / "config.json").write_text('{"model": {"id": "m"}, "data": {"path": "d.jsonl"}}')
    os.utime(job / "config.json", (old, old))
    try:
        none = cli("runs", "prune", home=home)
        assert none.returncode == 2 and "needs --older-than" in none.stderr
        dry = cli("runs", "prune", "--older-than", "30", "--dry-run", "--json", home=home)
        assert sorted(r["id"] for r in json.loads(dry.stdout)) == sorted(ids[:2])
        assert all((home / "runs" / i).is_dir() for i in ids)
        done = cli("runs", "prune", "--older-than", "30", home=home)
        assert done.returncode == 0 and "removed 2 runs" in done.stdout, done.stderr
        assert [i for i in ids if (home / "runs" / i).is_dir()] == [ids[2]]
        assert busy.is_dir() and job.is_dir() and (home / "cache.sqlite").is_file()
        refused = cli("runs", "rm", ids[2], "job-a", home=home)
        assert refused.returncode != 0 and "part of the batch" in refused.stderr
        assert (home / "runs" / ids[2]).is_dir()
        assert "is running" in cli("runs", "rm", busy.name, home=home).stderr and busy.is_dir()
    finally:
        lock.release()
    assert cli("runs", "rm", ids[2], busy.name, home=home).returncode == 0
    assert not (home / "runs" / ids[2]).exists() and not busy.exists()
    assert [r["id"] for r in json.loads(cli("runs", "list", "--json", home=home).stdout)] == ["job-a"]


def test_eval_scores_every_prompt_on_every_model(openai_server: FakeOpenAI, tmp_path: Path) -> None:
    """`eval DATA A.md B.md -m M1 -m M2`: each prompt answers every case on each model; the table and --json hold
    the prompts by models (score, pass rate, cost per success, p95; the best prompt on each model marked), -o
    every model's cases naming it, and the history one eval per model. Options that judge one model's prompt
    (--against, --fail-under, --report) are refused before any call."""
    def responder(req: dict) -> str:  # type: ignore[type-arg]
        told = "positive or negative" in " ".join(m["content"] for m in req["messages"])
        if req.get("model") == "weak":  # gets it right only when told the labels, and then half the time
            return "positive" if told and int(req["messages"][-1]["content"].split()[-1]) % 4 == 1 else "no idea"
        return ("positive" if int(req["messages"][-1]["content"].split()[-1]) % 2 else "negative") if told \
            else "maybe"

    openai_server.responder = responder
    data = write_jsonl(tmp_path / "d.jsonl",
                       [{"input": f"text {i}", "ideal": "positive" if i % 2 else "negative"} for i in range(16)])
    a, b = tmp_path / "a.md", tmp_path / "b.md"
    a.write_text("Here is a text: {input}\n")
    b.write_text("Answer positive or negative: {input}\n")
    base = ["eval", str(data), str(a), str(b), "-m", "openai/strong", "-m", "openai/weak", "--api-base",
            openai_server.url, "--metric", "contains"]
    r = cli(*base, "--json", "-o", str(tmp_path / "cases.jsonl"), home=tmp_path / "h")
    assert r.returncode == 0, r.stderr
    assert len(openai_server.requests) == 64  # two prompts, two models, 16 cases
    s = json.loads(r.stdout)
    cells = {(m["model"], Path(m["prompt"]).name): (m["score"], m["best_on_model"]) for m in s["matrix"]}
    assert cells == {("openai/strong", "a.md"): (0.0, False), ("openai/strong", "b.md"): (1.0, True),
                     ("openai/weak", "a.md"): (0.0, False), ("openai/weak", "b.md"): (0.25, True)}
    assert [m["model"] for m in s["models"]] == ["openai/strong", "openai/weak"]
    assert all(m["latency_p95_s"] is not None and "cost_per_success" in m for m in s["matrix"])
    written = [json.loads(x) for x in (tmp_path / "cases.jsonl").read_text().splitlines()]
    assert len(written) == 64 and {(w["model"], Path(w["prompt"]).name) for w in written} == set(cells)
    runs = json.loads(cli("runs", "list", "--json", home=tmp_path / "h").stdout)
    assert sorted(x["model"] for x in runs) == ["openai/strong", "openai/weak"]
    table = cli(*base, home=tmp_path / "h")
    flat = " ".join(table.stdout.replace("│", " ").split())
    assert table.returncode == 0 and "2 prompts on d.jsonl, by model" in flat, table.stdout + table.stderr
    assert "openai/strong" in flat and "openai/weak" in flat and "0.250" in flat
    asked = len(openai_server.requests)
    one = ["eval", str(data), str(b), "-m", "openai/strong", "-m", "openai/weak", "--api-base", openai_server.url]
    for extra in (["--against", str(a)], ["--fail-under", "0.5"], ["--report", str(tmp_path / "r.html")]):
        bad = cli(*one, *extra, home=tmp_path / "h")
        assert bad.returncode == 2 and ("several models" in bad.stderr or "one eval" in bad.stderr), bad.stderr
    assert len(openai_server.requests) == asked
    twice = cli("eval", str(data), str(a), "-m", "openai/weak", "-m", "openai/weak", "--api-base",
                openai_server.url, home=tmp_path / "h")
    assert twice.returncode == 2 and "given twice" in twice.stderr

    def judged(req: dict) -> str:  # type: ignore[type-arg]
        if "failure_category" in " ".join(m["content"] for m in req["messages"]):
            return '{"reasoning": "ok", "score": 5, "failure_category": "none"}'
        return responder(req)

    openai_server.responder = judged
    graded = cli(*one, "--judge", "openai/weak", "--self-agreement", "0", home=tmp_path / "h")
    assert graded.returncode == 0, graded.stderr
    # the notes come once all models are in: one every model's eval made, once, bare; the others naming their
    # model (the judge grades the weak model's own answers only)
    said = " ".join(graded.stderr.split())
    assert said.count("capped at") == 1 and ": task outputs capped" not in said
    assert "openai/weak: WARNING: the judge is the task model" in said and "openai/strong: WARNING" not in said
    assert "openai/strong: run " in said and "openai/weak: run " in said
