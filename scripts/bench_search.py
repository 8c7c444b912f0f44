"""Benchmark: does the tuned prompt beat plain hand-written prompts, with the embedded model as task AND
reasoning model (a reasoning model that cannot rewrite prompts)?

For each dataset and seed: the split is the one `optimize --seed S` makes; the three hand-written prompts in
scripts/handwritten/<dataset>/ are scored on that seed's test split with `reflexopt eval`; then `reflexopt
optimize` starts from a vague one-line prompt with `--max-calls N --seed S` and its tuned prompt is scored on
the same test split. Every run uses a fresh REFLEXOPT_HOME (no cached responses) and the default output cap.

    python scripts/bench_search.py --out scripts/results/search_smollm2.md
    python scripts/bench_search.py --code /path/to/older/checkout ...   # measure another version ("before")
"""

from __future__ import annotations

import argparse
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
SHARED = ROOT.parent / "shared" / "data"
TASKS = {
    "customer_reviews": ("Tell me about this review.", SHARED / "customer_reviews.jsonl"),
    "trec_questions": ("What kind of question is this?", SHARED / "trec_questions.jsonl"),
    "incident_types": ("What happened here?", ROOT / "scripts" / "data" / "incident_types.jsonl"),
}


def _run(args: list[str], home: Path, code: Path | None) -> tuple[dict[str, Any], float]:
    env = {**os.environ, "REFLEXOPT_HOME": str(home)}
    if code is not None:
        env["PYTHONPATH"] = str(code)
        _check_code(code, env)
    t0 = time.monotonic()
    # `python -m` puts the working directory first on sys.path: run in the checkout, or a reflexopt/ folder in
    # the caller's directory (a main checkout) would shadow the code being measured
    proc = subprocess.run([sys.executable, "-m", "reflexopt", *args], capture_output=True, text=True, env=env,
                          cwd=code)
    if proc.returncode != 0:
        raise SystemExit(f"failed: reflexopt {' '.join(args)}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout), time.monotonic() - t0


_checked: set[Path] = set()


def _check_code(code: Path, env: dict[str, str]) -> None:
    """Fail unless a run really imports reflexopt from `code`."""
    if code in _checked:
        return
    out = subprocess.run([sys.executable, "-c", "import reflexopt; print(reflexopt.__file__)"], capture_output=True,
                         text=True, env=env, cwd=code, check=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(code.resolve()):
        raise SystemExit(f"--code {code}: reflexopt was imported from {out}, not from the checkout")
    _checked.add(code)


def test_split(data: Path, seed: int, out: Path) -> Path:
    from reflexopt.data import load_dataset, split

    cases = load_dataset(data)
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    by_line = {c.line: r for c, r in zip(cases, rows)}
    test = split(cases, None, seed=seed).test
    out.write_text("".join(json.dumps(by_line[c.line]) + "\n" for c in test), encoding="utf-8")
    return out


def one(name: str, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    vague, data = TASKS[name]
    code = Path(args.code).resolve() if args.code else None
    test_file = test_split(data, seed, work / f"{name}-{seed}-test.jsonl")
    hand: dict[str, float] = {}
    if not args.skip_handwritten:
        for p in sorted((ROOT / "scripts" / "handwritten" / name).glob("*.md")):
            res, _ = _run(["eval", str(test_file), str(p), "--metric", "contains", "--json"], work / "home-eval", code)
            hand[p.name] = res["score"]
    prompt = work / f"{name}.md"
    prompt.write_text(vague + "\n", encoding="utf-8")
    best = work / f"{name}-{seed}.best.md"
    res, wall = _run(["optimize", str(data), str(prompt), "--metric", "contains", "--json", "--seed", str(seed),
                      "--max-calls", str(args.max_calls), "-o", str(best), *args.extra],
                     work / f"home-{name}-{seed}", code)
    return {"dataset": name, "seed": seed, "handwritten": hand, "baseline_test": res["baseline_test"],
            "best_test": res["best_test"], "p_value": res["p_value"], "model_calls": res["model_calls"],
            "trials": res["trials"], "stop_reason": res["stop_reason"], "wall_s": round(wall, 1),
            "operators": res.get("operators"), "best_prompt": best.read_text(encoding="utf-8")}


def _ms(xs: list[float]) -> str:
    if not xs:
        return "-"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.3f} ± {sd:.3f} (min {min(xs):.3f}, max {max(xs):.3f})"


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [f"# {args.title}", "",
             f"Made by `python scripts/bench_search.py {' '.join(sys.argv[1:])}` on {time.strftime('%Y-%m-%d')}, "
             "2-core CPU, SmolLM2-135M (embedded) as task and reasoning model, metric `contains`, "
             f"`--max-calls {args.max_calls}`, a fresh response cache per run. ± is the sample SD over seeds.", "",
             "| dataset | best hand-written (test) | start prompt (test) | tuned (test) | paid calls | wall |",
             "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == name]
        hand = [max(r["handwritten"].values()) for r in rs if r["handwritten"]]
        lines.append(f"| {name} | {_ms(hand)} | {_ms([r['baseline_test'] for r in rs])} | "
                     f"{_ms([r['best_test'] for r in rs])} | {statistics.mean(r['model_calls'] for r in rs):.0f} | "
                     f"{statistics.mean(r['wall_s'] for r in rs) / 60:.1f} min |")
    lines += ["", "## Per run", "", "| dataset | seed | hand-written 1 / 2 / 3 | start | tuned | p | calls | trials | "
              "stop | operators that ran |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        hand = " / ".join(f"{v:.3f}" for v in r["handwritten"].values()) or "-"
        ops = ", ".join(f"{k} {v}" for k, v in (r.get("operators") or {}).items())
        lines.append(f"| {r['dataset']} | {r['seed']} | {hand} | {r['baseline_test']:.3f} | {r['best_test']:.3f} | "
                     f"{r['p_value']:.2g} | {r['model_calls']} | {r['trials']} | {r['stop_reason']} | {ops} |")
    lines += ["", "## Tuned prompts", ""]
    for r in rows:
        lines += [f"{r['dataset']}, seed {r['seed']}:", "", "```markdown", r["best_prompt"].rstrip(), "```", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(TASKS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--max-calls", type=int, default=1500)
    ap.add_argument("--code", help="a checkout of another reflexopt version to measure instead of this one")
    ap.add_argument("--skip-handwritten", action="store_true")
    ap.add_argument("--title", default="Tuned vs hand-written prompts on the embedded model")
    ap.add_argument("--out", default=str(ROOT / "scripts" / "results" / "search_smollm2.md"))
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[])
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    jsonl = Path(args.out).with_suffix(".jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            for seed in args.seeds:
                row = one(name, seed, args, Path(tmp))
                rows.append(row)
                with jsonl.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{name} seed {seed}: hand {row['handwritten']} start {row['baseline_test']} "
                      f"tuned {row['best_test']} calls {row['model_calls']} {row['wall_s']}s", file=sys.stderr)
                Path(args.out).write_text(report(rows, args), encoding="utf-8")


if __name__ == "__main__":
    main()
