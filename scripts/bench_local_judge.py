"""A local judge beside the embedded task model: the same judged eval with the judge served apart (an
OpenAI-compatible llama.cpp server, one thread, the task model one thread: the setup the judge specs used) and
with the judge given as `local/PATH.gguf` (both servers run by reflexopt, every core each, taking turns).
Each configuration starts from an empty response cache; the verdicts must come out the same.

    python scripts/bench_local_judge.py --gguf ~/.cache/reflexopt-bench/qwen/qwen.gguf --cases 6

Writes scripts/results/local_judge_speed.md. Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "scripts" / "data" / "security_incidents_60.jsonl"
PROMPT = ROOT / "scripts" / "handwritten" / "security_incidents" / "vague.md"
PORT = 8767


def serve(gguf: Path) -> subprocess.Popen[bytes]:
    """The judge apart, as the judge specs ran it: one thread for generation and prompts."""
    # through reflexopt's server process: it dies with this script and avoids the AMX kernels that crash some builds
    proc = subprocess.Popen([sys.executable, "-m", "reflexopt.models.llama_child", str(os.getpid()), "llama_cpp.server",
                             "--model", str(gguf), "--host", "127.0.0.1",
                             "--port", str(PORT), "--n_ctx", "8192", "--model_alias", "judge", "--n_threads", "1",
                             "--n_threads_batch", "1", "--verbose", "False"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/v1/models", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the judge server did not start")


def judged_eval(data: Path, judge: str, env: dict[str, str]) -> tuple[dict[str, object], list[float], float]:
    with tempfile.TemporaryDirectory() as home:
        out = Path(home) / "cases.jsonl"
        cmd = [sys.executable, "-m", "reflexopt", "eval", str(data), str(PROMPT), "-m", "local/smollm2", "--judge",
               judge, "--judge-criteria", "correctness", "--self-agreement", "0", "--json", "-o", str(out)]
        t0 = time.monotonic()
        p = subprocess.run(cmd, capture_output=True, text=True, env={**env, "REFLEXOPT_HOME": home})
        wall = time.monotonic() - t0
        if p.returncode != 0:
            raise SystemExit(p.stderr[-2000:])
        scores = [json.loads(x)["score"] for x in out.read_text().splitlines()]
        return json.loads(p.stdout), scores, wall


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", type=Path, required=True, help="the judge's GGUF file")
    ap.add_argument("--cases", type=int, default=6)
    ap.add_argument("--out", type=Path, default=ROOT / "scripts" / "results" / "local_judge_speed.md")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "cases.jsonl"
        data.write_text("".join(DATA.read_text().splitlines(keepends=True)[: a.cases]))
        base = {k: v for k, v in os.environ.items() if k not in ("REFLEXOPT_LOCAL_THREADS", "OPENAI_API_BASE")}
        server = serve(a.gguf)
        try:
            apart = judged_eval(data, "openai/judge@concurrency=1,timeout_s=900", {
                **base, "REFLEXOPT_LOCAL_THREADS": "1", "OPENAI_API_BASE": f"http://127.0.0.1:{PORT}/v1",
                "OPENAI_API_KEY": "local"})
        finally:
            server.kill()
            server.wait()
        inside = judged_eval(data, f"local/{a.gguf}@timeout_s=900", base)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    rows = [("judge served apart: one thread each, both computing at once", apart),
            ("`--judge local/PATH.gguf`: every core each, taking turns", inside)]
    lines = ["# A local judge beside the embedded task model", "",
             f"`python scripts/bench_local_judge.py --gguf qwen.gguf --cases {a.cases}` at {commit}, "
             f"{time.strftime('%Y-%m-%d')}: SmolLM2-135M answers the first {a.cases} rows of "
             "security_incidents_60 (the vague prompt, up to 256 tokens each) and Qwen2.5-Coder-1.5B (Q4_K_M) judges "
             "them (`correctness`), each configuration from an empty response cache, nothing else running on the "
             "2-core machine.", "",
             "| configuration | wall | per judged case | mean score | verdicts equal to the first row's |",
             "|---|---|---|---|---|"]
    for name, (summary, scores, wall) in rows:
        same = sum(x == y for x, y in zip(scores, apart[1]))
        lines.append(f"| {name} | {wall:.0f} s | {wall / a.cases:.0f} s | {summary['score']:.3f} | "
                     f"{same} of {len(scores)} |")
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
