"""Peak memory of `reflexopt eval` against the number of rows, with a zero-latency loopback server (no model).

    python scripts/bench_memory.py --rows 1000 5000 10000 20000 --out scripts/results/memory.md

Each row count is one `eval` process; its peak resident memory (ru_maxrss of the child) is reported, and the
part of it above the 1,000-row run, per row. The bootstrap CI used to build a 10,000 x n index matrix (155 KB
per row: 1.6 GB at 10k rows, 3.15 GB at 20k, measured by the reliability campaign); it is now drawn in blocks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import LatencyServer, _env  # noqa: E402

PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); "
        "sys.stderr.write(r.stderr.decode()[-2000:]) if r.returncode else None; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def peak_kb(rows: int, work: Path) -> tuple[int, float]:
    srv = LatencyServer(0.0)
    data = work / f"d{rows}.jsonl"
    data.write_text("".join(json.dumps({"input": f"case {i}", "ideal": "positive" if i % 3 else "negative"}) + "\n"
                            for i in range(rows)))
    (work / "p.md").write_text("Say positive.\n")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", PEAK, sys.executable, "-m", "reflexopt", "eval", str(data),
                        str(work / "p.md"), "-m", "openai/m", "--api-base", srv.url, "--metric", "exact",
                        "--concurrency", "32", "--json"], capture_output=True, text=True, env=_env(work / f"h{rows}"))
    if r.returncode != 0 or not r.stdout.strip():
        raise SystemExit(r.stderr[-2000:])
    return int(r.stdout.strip()), time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1000, 5000, 10000, 20000])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent).stdout.strip()
    lines = ["| rows | peak RSS (MB) | above the first row count, per row (KB) | wall (s) |", "|---|---|---|---|"]
    first: tuple[int, int] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.rows:
            kb, wall = peak_kb(n, Path(tmp))
            per_row = "" if first is None else f"{(kb - first[1]) / (n - first[0]):.2f}"
            first = first or (n, kb)
            lines.append(f"| {n:,} | {kb / 1024:.0f} | {per_row} | {wall:.0f} |")
            print(lines[-1], flush=True)
    text = (f"# Peak memory of `eval` against rows\n\ncommit {commit}, `python scripts/bench_memory.py --rows "
            f"{' '.join(map(str, args.rows))}`, {os.cpu_count()} cores, one run per row count (a deterministic "
            "measure: no spread reported)\n\n" + "\n".join(lines) + "\n")
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
