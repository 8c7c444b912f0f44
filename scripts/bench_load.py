"""`compare --load` on two configurations of the embedded model: p95 latency, throughput and 429s at rising
concurrency, from real calls. The embedded server answers one request at a time, so latency should grow with
the number in flight while throughput stays flat.

    python scripts/bench_load.py --out scripts/results/load_smollm2.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", default="1,4,8")
    ap.add_argument("--calls", type=int, default=24)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    cmd = ["compare", "examples/reviews/data.jsonl", "examples/reviews/prompt.md", "-m", "local/smollm2", "-m",
           "local/smollm2@temperature=0.9", "--no-tune", "--load", args.levels, "--load-calls", str(args.calls),
           "--json"]
    with tempfile.TemporaryDirectory() as home:
        p = subprocess.run([sys.executable, "-m", "reflexopt", *cmd], capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "REFLEXOPT_HOME": home})
    if p.returncode != 0:
        raise SystemExit(p.stderr[-3000:])
    result = json.loads(p.stdout)
    lines = ["| model | in flight | calls | HTTP requests | 429s | errors | req/s | p50 (s) | p95 (s) | p99 (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        for x in r.get("load") or []:
            lines.append(f"| {r['model']} | {x['concurrency']} | {x['requests']} | {x['http_requests']} | "
                         f"{x['rate_limited']} | {x['error_rate']:.1%} | {x['throughput_rps']:.2f} | {x['p50_s']} | "
                         f"{x['p95_s']} | {x['p99_s']} |")
    text = (f"# `compare --load` on the embedded model\n\ncommit {commit}, `reflexopt {' '.join(cmd)}` "
            f"(`python scripts/bench_load.py`), 2 cores, one run (a measurement of this machine, no spread)\n\n"
            + "\n".join(lines) + f"\n\nRecommendation: {result['reason']}\n")
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
