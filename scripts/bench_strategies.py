"""Benchmark: reflexopt's search strategies (reflex, mipro, gepa) and aevyra-reflex side by side, on one
workload each: the same dataset, vague starting prompt, split (`--seed S`), metric (`contains`) and held-out
test split.

For each dataset, budget and seed: `reflexopt optimize --strategy S --max-calls B --seed s` from a vague
one-line prompt, with a fresh REFLEXOPT_HOME (no cached responses); the summary gives the test scores, paid
calls and tokens. aevyra-reflex (installed in its own venv, `--aevyra BIN`) runs against the same embedded
model through a loopback proxy that counts its calls and tokens; it has no call budget, so `--max-iterations`
is set from the budget and the calls it made are reported as they were. Its best prompt is then scored by
`reflexopt eval` on the same test split as ours (aevyra trains on its own 70/10/20 split of the same file,
which can include rows of our test split: if anything, that favours aevyra).

    python scripts/bench_strategies.py --out docs/benchmarks/strategies_smollm2.md
    python scripts/bench_strategies.py --reasoning-model openai/qwen --reasoning-base http://127.0.0.1:8081/v1 ...
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import TASKS, _ms, _run, test_split  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# aevyra-reflex has no call budget: --max-iterations per budget, measured on a 200-row set against a loopback
# server (1 iteration: about 640 calls, its minimum; 3: about 1,400). The calls it made are reported as made.
ITERATIONS = {500: 1, 1500: 3}


def _code(args: argparse.Namespace) -> Path | None:
    return Path(args.code).resolve() if args.code else None


def _usage(home: Path) -> dict[str, Any]:
    summary = next(home.glob("runs/*/summary.json"))
    return dict(json.loads(summary.read_text(encoding="utf-8"))["usage"])


def ours(name: str, strategy: str, budget: int, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    vague, data = TASKS[name]
    prompt = work / f"{name}.md"
    prompt.write_text(vague + "\n", encoding="utf-8")
    home = work / f"home-{name}-{strategy}-{budget}-{seed}"
    best = work / f"{name}-{strategy}-{budget}-{seed}.best.md"
    extra = ["--reasoning-model", args.reasoning_model] if args.reasoning_model else []
    if args.reasoning_base:
        extra += ["--api-base", args.reasoning_base]  # only the reasoning model is remote; the task is local/
    extra += shlex.split(args.optimize_args or "")
    res, wall = _run(["optimize", str(data), str(prompt), "--metric", "contains", "--json", "--seed", str(seed),
                      "--max-calls", str(budget), "--strategy", strategy, "-o", str(best), *extra], home, _code(args))
    usage = _usage(home)
    return {"dataset": name, "strategy": _label(strategy, args), "budget": budget, "seed": seed,
            "baseline_test": res["baseline_test"], "best_test": res["best_test"], "p_value": res["p_value"],
            "calls": res["model_calls"], "tokens": usage["prompt_tokens"] + usage["completion_tokens"],
            "wall_s": round(wall, 1), "stop": res["stop_reason"], "best_prompt": best.read_text(encoding="utf-8")}


class CountingProxy:
    """Loopback OpenAI-protocol proxy: forwards to `upstream`, counts requests and tokens; with `cap`, lowers
    each request's max_tokens to at most `cap`."""

    def __init__(self, upstream: str, cap: int | None = None) -> None:
        self.calls = 0
        self.tokens = 0
        lock = threading.Lock()
        outer = self
        client = httpx.Client(timeout=600)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _forward(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0) or 0))
                if cap is not None and method == "POST" and body:
                    req = json.loads(body)
                    req["max_tokens"] = min(int(req.get("max_tokens") or cap), cap)
                    body = json.dumps(req).encode()
                path = self.path[len("/v1"):] if self.path.startswith("/v1") else self.path
                r = client.request(method, upstream + path, content=body or None,
                                   headers={"content-type": "application/json"})
                if method == "POST":
                    usage = (r.json() if r.status_code == 200 else {}).get("usage") or {}
                    with lock:
                        outer.calls += 1
                        outer.tokens += int(usage.get("total_tokens") or 0)
                self.send_response(r.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            def do_POST(self) -> None:  # noqa: N802
                self._forward("POST")

            def do_GET(self) -> None:  # noqa: N802
                self._forward("GET")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def _label(strategy: str, args: argparse.Namespace) -> str:
    return f"{strategy} ({args.optimize_args})" if args.optimize_args else strategy


def _aevyra_label(args: argparse.Namespace) -> str:
    return "aevyra-reflex 0.2.0" + (f" (task outputs capped at {args.aevyra_task_cap})" if args.aevyra_task_cap else "")


def aevyra(name: str, budget: int, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from reflexopt.models.local import LocalServer, model_file

    vague, data = TASKS[name]
    prompt = work / f"{name}.md"
    prompt.write_text(vague + "\n", encoding="utf-8")
    best = work / f"{name}-aevyra-{budget}-{seed}.best.md"
    server = LocalServer(model_file("smollm2"))
    server.start()
    # task calls through one proxy (capped with --aevyra-task-cap), reasoning calls through another (never capped)
    proxy = CountingProxy(server.url, cap=args.aevyra_task_cap)
    rproxy = CountingProxy(args.reasoning_base or server.url)
    try:
        reasoning = ["--reasoning-model", args.reasoning_model or "openai/smollm2", "--reasoning-base-url", rproxy.url]
        env = {**os.environ, "OPENAI_BASE_URL": proxy.url, "OPENAI_API_KEY": "sk-local",
               "REFLEX_REASONING_API_KEY": "sk-local"}
        t0 = time.monotonic()
        proc = subprocess.run([args.aevyra, "optimize", str(data), str(prompt), "-m", "openai/smollm2",
                               "--metric", "exact", "--input-field", "input", "--output-field", "ideal",
                               *reasoning, "--max-iterations", str(ITERATIONS[budget]),
                               "--max-workers", "2", "-o", str(best), "--run-dir", str(work / f"aev-{seed}")],
                              capture_output=True, text=True, env=env, cwd=work)
        wall = time.monotonic() - t0
    finally:
        proxy.close()
        rproxy.close()
        server.stop()
    if proc.returncode != 0 or not best.exists():
        raise SystemExit(f"aevyra-reflex failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    test_file = test_split(data, seed, work / f"{name}-{seed}-test.jsonl")
    home = work / "home-aev-eval"
    start, _ = _run(["eval", str(test_file), str(prompt), "--metric", "contains", "--json"], home, _code(args))
    tuned, _ = _run(["eval", str(test_file), str(best), "--metric", "contains", "--json"], home, _code(args))
    return {"dataset": name, "strategy": _aevyra_label(args), "budget": budget, "seed": seed,
            "baseline_test": start["score"], "best_test": tuned["score"], "p_value": None,
            "calls": proxy.calls + rproxy.calls, "tokens": proxy.tokens + rproxy.tokens, "wall_s": round(wall, 1),
            "stop": f"{ITERATIONS[budget]} iterations"
            + (f", task outputs capped at {args.aevyra_task_cap} tokens" if args.aevyra_task_cap else ""),
            "best_prompt": best.read_text(encoding="utf-8")}


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    who = f"`{args.reasoning_model}`" if args.reasoning_model else "SmolLM2-135M (embedded, the task model too)"
    lines = [f"# {args.title}", "",
             f"Made by `python scripts/bench_strategies.py {' '.join(sys.argv[1:])}` on {time.strftime('%Y-%m-%d')}, "
             f"2-core CPU. Task model SmolLM2-135M (embedded); reasoning model {who}; metric `contains`; a vague "
             "one-line starting prompt; a fresh response cache per run. Scores are on the held-out test split of "
             "`--seed S`; ± is the sample SD over seeds.", "",
             "| dataset | budget | strategy | start (test) | tuned (test) | paid calls | tokens | wall |",
             "|---|---|---|---|---|---|---|---|"]
    keys = list(dict.fromkeys((r["dataset"], r["budget"], r["strategy"]) for r in rows))
    for name, budget, strategy in keys:
        rs = [r for r in rows if (r["dataset"], r["budget"], r["strategy"]) == (name, budget, strategy)]
        lines.append(f"| {name} | {budget} | {strategy} | {_ms([r['baseline_test'] for r in rs])} | "
                     f"{_ms([r['best_test'] for r in rs])} | {statistics.mean(r['calls'] for r in rs):.0f} | "
                     f"{statistics.mean(r['tokens'] for r in rs) / 1000:.0f}k | "
                     f"{statistics.mean(r['wall_s'] for r in rs) / 60:.1f} min |")
    lines += ["", "## Per run", "", "| dataset | budget | strategy | seed | start | tuned | p | calls | stop |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = "-" if r["p_value"] is None else f"{r['p_value']:.2g}"
        lines.append(f"| {r['dataset']} | {r['budget']} | {r['strategy']} | {r['seed']} | {r['baseline_test']:.3f} | "
                     f"{r['best_test']:.3f} | {p} | {r['calls']} | {r['stop']} |")
    lines += ["", "## Tuned prompts", ""]
    for r in rows:
        lines += [f"{r['dataset']}, {r['strategy']}, {r['budget']} calls, seed {r['seed']}:", "", "```markdown",
                  r["best_prompt"].rstrip(), "```", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["customer_reviews", "trec_questions"])
    ap.add_argument("--strategies", nargs="+", default=["reflex", "mipro", "gepa"])
    ap.add_argument("--budgets", nargs="+", type=int, default=[500, 1500])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--code", help="a checkout (git worktree) of the reflexopt version to measure")
    ap.add_argument("--aevyra", help="the aevyra-reflex executable of its own venv (adds it as a strategy)")
    ap.add_argument("--aevyra-task-cap", type=int, help="cap aevyra-reflex's task outputs at this many tokens (it "
                    "has no flag for it; reflexopt derives 16 for these label sets)")
    ap.add_argument("--reasoning-model", help="e.g. openai/qwen (default: the task model)")
    ap.add_argument("--reasoning-base", help="base URL of the reasoning model's OpenAI-compatible server")
    ap.add_argument("--optimize-args", help="more options for reflexopt's own runs, e.g. '--patience 20' "
                    "(named in the strategy column)")
    ap.add_argument("--title", default="Strategies side by side on the embedded model")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "strategies_smollm2.md"))
    args = ap.parse_args()
    jsonl = Path(args.out).with_suffix(".jsonl")
    rows = [json.loads(x) for x in jsonl.read_text().splitlines()] if jsonl.exists() else []
    done = {(r["dataset"], r["strategy"], r["budget"], r["seed"]) for r in rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for budget in args.budgets:  # the smaller budget over every dataset first
            for name in args.datasets:
                for seed in args.seeds:
                    for strategy in args.strategies + (["aevyra"] if args.aevyra else []):
                        label = _aevyra_label(args) if strategy == "aevyra" else _label(strategy, args)
                        if (name, label, budget, seed) in done:  # a re-run continues where it stopped
                            continue
                        work = Path(tmp) / f"{name}-{label}-{budget}-{seed}"
                        work.mkdir()
                        try:
                            row = (aevyra(name, budget, seed, args, work) if strategy == "aevyra" else
                                   ours(name, strategy, budget, seed, args, work))
                        except SystemExit as e:  # one failed run is reported, the others go on
                            print(f"{name} {label} {budget} seed {seed} FAILED: {e}", file=sys.stderr, flush=True)
                            continue
                        rows.append(row)
                        with jsonl.open("a", encoding="utf-8") as f:
                            f.write(json.dumps(row) + "\n")
                        print(f"{name} {label} {budget} seed {seed}: start {row['baseline_test']} tuned "
                              f"{row['best_test']} calls {row['calls']} {row['wall_s']}s", file=sys.stderr, flush=True)
                        Path(args.out).write_text(report(rows, args), encoding="utf-8")


if __name__ == "__main__":
    main()
