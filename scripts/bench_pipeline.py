"""Benchmark: a two-step pipeline tuned by reflexopt (`optimize --pipeline`) against the same program written as a
DSPy module and compiled by DSPy's MIPROv2, on the same data, split (`--seed`), metric (`contains`), held-out
test split, model (the embedded SmolLM2, also MIPROv2's prompt model) and call budget (everything counted: the
search and the final test scoring).

The program is examples/pipeline/app.py: a first step labels the review, a second checks that label and has the
last word when it names exactly one label. The DSPy module does the same with two `dspy.Predict` steps. DSPy
runs through reflexopt's small-model adapter (`ReflexAdapter`: each step rendered exactly as reflexopt renders a
prompt, the raw completion taken as the output) and reflexopt's model client (`ReflexLM`: cache, budget,
accounting), so both sides send the same kind of messages; a DSPy step that still fails to produce an output
counts as a parse failure, reported per run.

    python scripts/bench_pipeline.py --seeds 100 101 102 --max-calls 400 --out docs/benchmarks/pipeline_smollm2.md

Resumes: rows already in the .jsonl beside --out are kept (one row per seed and system).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EX = ROOT / "examples" / "pipeline"
LABELS = ("positive", "negative")


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()


def reflex(seed: int, budget: int, work: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "reflexopt", "optimize", str(EX / "data.jsonl"), "--pipeline", f"{EX / 'app.py'}:run",
           "--prompt", f"answer={EX / 'prompts' / 'answer.md'}", "--prompt", f"check={EX / 'prompts' / 'check.md'}",
           "--metric", "contains", "--max-calls", str(budget), "--seed", str(seed), "--json"]
    env = {**os.environ, "REFLEXOPT_HOME": str(work / f"home-reflex-{seed}")}
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=7200)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    r = json.loads(proc.stdout)
    return {"system": "reflexopt (reflex, --pipeline)", "seed": seed, "baseline_test": r["baseline_test"],
            "test": r["best_test"], "calls": budget - int(r["unspent_calls"]), "paid_calls": r["model_calls"],
            "parse_failures": None, "minutes": round((time.monotonic() - start) / 60, 1),
            "command": " ".join(["reflexopt", *cmd[3:]])}


def mipro(seed: int, budget: int, work: Path) -> dict[str, Any]:
    os.environ["REFLEXOPT_HOME"] = str(work / f"home-mipro-{seed}")
    from reflexopt.budget import RunBudget
    from reflexopt.config import ModelSpec, optimize_config, pipeline_spec
    from reflexopt.models import get_client
    from reflexopt.prompt import load_prompt
    from reflexopt.scoring import make_scorer
    from reflexopt.strategies import dspy_opt
    from reflexopt.workload import Workload

    dspy = dspy_opt.dspy
    spec = pipeline_spec(f"{EX / 'app.py'}:run", [f"answer={EX / 'prompts' / 'answer.md'}",
                                                  f"check={EX / 'prompts' / 'check.md'}"])
    cfg = optimize_config(EX / "data.jsonl", EX / "prompts" / "answer.md", metric="contains", seed=seed,
                          pipeline=spec)
    answer_p, check_p = load_prompt(EX / "prompts" / "answer.md"), load_prompt(EX / "prompts" / "check.md")
    work_ = Workload.load(cfg.data, answer_p, seed=seed, check_fields=False)
    train, val, test = list(work_.train), work_.val, work_.test
    scorer, _ = make_scorer(cfg.scorer, work_.cases)
    task = get_client(ModelSpec(id="local/smollm2", max_tokens=8), role="task")  # the app's cap per step
    prompter = get_client(ModelSpec(id="local/smollm2"), role="reasoning")
    gate = RunBudget(budget, None)
    for c in (task, prompter):
        c.gate = gate
        gate.meters.append(c.meter)
    gate.set_reserve(2 * 2 * len(test))  # scoring baseline and tuned program on test (2 steps each) is inside the
    # budget, as reflexopt's verdict is
    failures = {"n": 0}

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        task_lm, prompt_lm = dspy_opt.ReflexLM(task, loop), dspy_opt.ReflexLM(prompter, loop, max_tokens=256)
        cases = {c.input_text: c for c in (*train, *val, *test)}

        class AnswerThenCheck(dspy.Module):  # type: ignore[misc]
            def __init__(self) -> None:
                super().__init__()
                self.answer = dspy.Predict(dspy_opt.TaskSignature.with_instructions(answer_p.text.strip()))
                self.check = dspy.Predict(dspy_opt.TaskSignature.with_instructions(check_p.text.strip()))

            def forward(self, input: str) -> Any:  # noqa: A002 - DSPy passes the field by name
                first = str(self.answer(input=input).answer or "").strip()
                checked = str(self.check(input=f"{input}\n(Proposed label: {first})").answer or "").strip()
                one = sum(lab in checked.lower() for lab in LABELS) == 1
                return dspy.Prediction(answer=checked if one else first)

        def score(case_text: str, output: str) -> float:
            s = asyncio.run_coroutine_threadsafe(scorer.score(cases[case_text], output), loop).result()
            return float(s.value or 0.0)

        def metric(gold: Any, pred: Any, trace: Any = None) -> float:
            return score(str(gold.input), str(getattr(pred, "answer", "") or ""))

        def ex(c: Any) -> Any:
            return dspy.Example(input=c.input_text, answer=c.ideal or "").with_inputs("input")

        adapter = dspy_opt.ReflexAdapter(answer_p, cases)
        per_case = 2
        left = int(gate.remaining())
        n_cand, mb = 6, max(1, min(25, len(val)))
        fixed = n_cand * 4 + 20 + n_cand
        trials = max(2, int((0.8 * left / per_case - fixed) / (mb + len(val) / 5)))

        def compile_() -> Any:
            with contextlib.redirect_stdout(sys.stderr), dspy.context(lm=task_lm, adapter=adapter):
                opt = dspy.MIPROv2(metric=metric, prompt_model=prompt_lm, task_model=task_lm, auto=None,
                                   num_candidates=n_cand, max_bootstrapped_demos=2, max_labeled_demos=4,
                                   num_threads=1, seed=seed, verbose=False, track_stats=False, max_errors=10**6)
                try:
                    return opt.compile(AnswerThenCheck(), trainset=[ex(c) for c in train], valset=[ex(c) for c in val],
                                       num_trials=trials, minibatch_size=mb, minibatch=len(val) > mb,
                                       requires_permission_to_run=False)
                except dspy_opt.BudgetExceeded:
                    return None

        def run_test(program: Any) -> tuple[float, float]:
            gate.set_reserve(0)
            scores_b, scores_t = [], []
            with dspy.context(lm=task_lm, adapter=adapter):
                for c in test:
                    for prog, out in ((AnswerThenCheck(), scores_b), (program, scores_t)):
                        try:
                            pred = prog(input=c.input_text)
                            out.append(score(c.input_text, str(pred.answer or "")))
                        except Exception:  # noqa: BLE001 - a step without an output: DSPy's parse failure
                            failures["n"] += 1
                            out.append(0.0)
            return statistics.mean(scores_b), statistics.mean(scores_t)

        program = await asyncio.to_thread(compile_)
        base, tuned = await asyncio.to_thread(run_test, program or AnswerThenCheck())
        return {"baseline_test": round(base, 4), "test": round(tuned, 4), "compiled": program is not None}

    start = time.monotonic()
    r = asyncio.run(main())
    paid = task.meter.calls + prompter.meter.calls
    return {"system": "DSPy MIPROv2 (same program as a dspy.Module)", "seed": seed,
            "baseline_test": r["baseline_test"], "test": r["test"], "calls": gate.granted, "paid_calls": paid,
            "parse_failures": failures["n"], "minutes": round((time.monotonic() - start) / 60, 1),
            "command": f"python scripts/bench_pipeline.py --seeds {seed} --max-calls {budget}"}


def main() -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")  # DSPy's progress bars
    import logging

    logging.getLogger("dspy").setLevel(logging.CRITICAL)  # one line per refused call once the budget is spent
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    ap.add_argument("--max-calls", type=int, default=400)
    ap.add_argument("--systems", nargs="+", default=["reflex", "mipro"])
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    rows_file = a.out.with_suffix(".jsonl")
    rows = [json.loads(x) for x in rows_file.read_text().splitlines()] if rows_file.exists() else []
    done = {(r["system"].split(" ")[0], r["seed"]) for r in rows}
    commit = _commit()
    for seed in a.seeds:
        for system in a.systems:
            key = ("reflexopt" if system == "reflex" else "DSPy", seed)
            if key in done:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                row = (reflex if system == "reflex" else mipro)(seed, a.max_calls, Path(tmp))
            row.update(commit=commit, max_calls=a.max_calls)
            rows.append(row)
            with rows_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), file=sys.stderr)
    write_table(rows, a.out)


def write_table(rows: list[dict[str, Any]], out: Path) -> None:
    lines = ["# A two-step pipeline: reflexopt `--pipeline` against DSPy MIPROv2 on the same program", "",
             "examples/pipeline (60 product-review sentences, split per seed into 18/21/21), the embedded model "
             "(SmolLM2-135M) as task and proposal model, metric `contains`, one call budget for everything. "
             "Produced by scripts/bench_pipeline.py; every row carries its commit and command (.jsonl beside "
             "this file).", "", "| system | seeds | baseline test | tuned test (mean ± SD) | calls used | "
             "DSPy parse failures | minutes |", "|---|---|---|---|---|---|---|"]
    for system in dict.fromkeys(r["system"] for r in rows):
        rs = [r for r in rows if r["system"] == system]
        tests = [r["test"] for r in rs]
        sd = statistics.stdev(tests) if len(tests) > 1 else 0.0
        fails = [r["parse_failures"] for r in rs if r["parse_failures"] is not None]
        lines.append(f"| {system} | {', '.join(str(r['seed']) for r in rs)} | "
                     f"{statistics.mean(r['baseline_test'] for r in rs):.3f} | {statistics.mean(tests):.3f} ± "
                     f"{sd:.3f} | {statistics.mean(r['calls'] for r in rs):.0f} | "
                     f"{sum(fails) if fails else '-'} | {statistics.mean(r['minutes'] for r in rs):.1f} |")
    lines += ["", "Per seed:", "", "| system | seed | baseline | tuned | calls | commit | command |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['system']} | {r['seed']} | {r['baseline_test']:.3f} | {r['test']:.3f} | {r['calls']} | "
              f"{r['commit']} | `{r['command']}` |" for r in rows]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
