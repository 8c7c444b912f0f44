"""How far an LLM judge can be trusted on free text: its self-agreement, how often its reasoning contradicts its
score, how often its verdict does not parse, and which structured form its server took.

Two phases, one model server at a time (so they never share the 2 cores):

1. responses: the embedded model (SmolLM2) writes a brief for the first N incident reports
   (`reflexopt eval ... --metric rouge-l -o`), served from the response cache on a re-run;
2. verdicts: a judge on an OpenAI-compatible server (for example Qwen2.5-Coder-1.5B served by llama-cpp-python as
   `openai/qwen`) grades those recorded responses with the set's rubric
   (`reflexopt eval graded.jsonl --responses response --judge MODEL --judge-criteria RUBRIC --self-agreement K`).

Both phases resume: their outputs are kept in --work and skipped when present, and calls are cached there.

    python scripts/bench_judge_trust.py --judge openai/qwen --api-base http://127.0.0.1:8766/v1 \\
        --out scripts/results/judge_trust_qwen.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
PROMPT = "Write a three-sentence executive brief of this security incident report.\n\n{input}\n"


def run(args: list[str], home: Path, extra_env: dict[str, str] | None = None) -> dict:
    env = {**os.environ, "REFLEXOPT_HOME": str(home), **(extra_env or {})}
    p = subprocess.run([sys.executable, "-m", "reflexopt", *args], capture_output=True, text=True, cwd=ROOT, env=env)
    if p.returncode != 0:
        raise SystemExit(f"reflexopt {' '.join(args)} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA / "security_incidents.jsonl")
    ap.add_argument("--rubric", type=Path, default=DATA / "security_incidents_rubric.md")
    ap.add_argument("--rows", type=int, default=30)
    ap.add_argument("--self-agreement", type=int, default=20)
    ap.add_argument("--judge", default="openai/qwen")
    ap.add_argument("--api-base", default="http://127.0.0.1:8766/v1")
    ap.add_argument("--judge-settings", default="concurrency=1,timeout_s=900",
                    help="the judge's model settings: llama-cpp-python's server answers one request at a time, so "
                         "requests queued behind 7 others time out at the default 120 s")
    ap.add_argument("--work", type=Path, default=Path("/tmp/reflexopt-judge-trust"))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--phase", choices=("responses", "verdicts", "all"), default="all",
                    help="responses: only phase 1 (then start the judge's server and run verdicts)")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    rows = [json.loads(x) for x in args.data.read_text().splitlines() if x.strip()][:args.rows]
    subset, prompt = work / "subset.jsonl", work / "prompt.md"
    subset.write_text("".join(json.dumps({"id": f"r{i:03d}", **r}) + "\n" for i, r in enumerate(rows)))
    prompt.write_text(PROMPT)

    responses = work / "responses.jsonl"
    t0 = time.monotonic()
    if not responses.exists():
        run(["eval", str(subset), str(prompt), "--metric", "rouge-l", "-o", str(responses), "--json"], home)
    t_responses = time.monotonic() - t0
    if args.phase == "responses":
        print(f"responses written to {responses} ({t_responses / 60:.1f} min)")
        return
    outputs = {r["case_id"]: r["output"] for r in map(json.loads, responses.read_text().splitlines())}
    graded = work / "graded.jsonl"
    graded.write_text("".join(json.dumps({"id": f"r{i:03d}", **r, "response": outputs.get(f"r{i:03d}", "")}) + "\n"
                              for i, r in enumerate(rows)))

    verdicts = work / "verdicts.jsonl"
    summary_path = work / "summary.json"
    t0 = time.monotonic()
    judge = f"{args.judge}@{args.judge_settings}" if args.judge_settings else args.judge
    judge_cmd = ["eval", str(graded), "--responses", "response", "--judge", judge, "--api-base",
                 args.api_base, "--judge-criteria", str(args.rubric), "--self-agreement", str(args.self_agreement),
                 "-o", str(verdicts), "--json"]
    if not summary_path.exists():
        summary_path.write_text(json.dumps(run(judge_cmd, home, {"OPENAI_API_KEY": "local"})))
    t_judge = time.monotonic() - t0
    s = json.loads(summary_path.read_text())
    j = s["judge"]
    sa = j["self_agreement"] or {}
    scores = [r["score"] for r in map(json.loads, verdicts.read_text().splitlines()) if r["score"] is not None]
    raw = [round(1 + 4 * x) for x in scores]
    hist = {k: raw.count(k) for k in range(1, 6)}
    shown = " ".join(judge_cmd).replace(str(work), "$WORK").replace(str(DATA), "../shared/data")
    lines = [
        f"# Judge trust: {args.judge} on {args.data.name} with its rubric",
        "",
        f"commit {commit} · `python scripts/bench_judge_trust.py --judge {args.judge} --rows {args.rows} "
        f"--self-agreement {args.self_agreement}` · 2 cores · one run (the judge is the measurement; its "
        "redraws are the spread)",
        "",
        f"Responses: the first {args.rows} reports, briefed by the embedded model (SmolLM2-135M) with the prompt "
        f"`{PROMPT.splitlines()[0]}` ({t_responses / 60:.1f} min here; 0 when cached). Verdicts: "
        f"`reflexopt {shown}` ({t_judge / 60:.1f} min; 0 when resumed).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| verdicts | {j['verdicts']} of {s['n_cases']} responses |",
        f"| asked as | {j['structured']} (the server refused OpenAI's json_schema form; the next form took) |"
        if j["structured"] == "json_object+schema" else f"| asked as | {j['structured']} |",
        f"| unparseable after retries | {j['parse_errors']} |",
        f"| reasoning contradicts the score | {j['contradictions']} of {j['verdicts']} |",
        f"| self-agreement: SD of one verdict (0..1) | {sa.get('sd', float('nan')):.3f} over {sa.get('n', 0)} "
        "cases re-judged twice |",
        f"| self-agreement: same pass/fail in both redraws | {sa.get('pass_agree') or 0:.0%} |",
        f"| self-agreement: same score in both redraws | {sa.get('exact_agree') or 0:.0%} |",
        f"| mean score (0..1) · pass rate | {s['score']} · {s['pass_rate']} |",
        f"| scores 1..5 | {' · '.join(f'{k}: {v}' for k, v in hist.items())} |",
        f"| judge calls · judge tokens | {s['model_calls']} · {s['prompt_tokens']:,} prompt + "
        f"{s['completion_tokens']:,} completion |",
        "",
        f"Min gain this noise sets for a run with 30 val cases: 2 × {sa.get('sd', 0):.3f} / √30 = "
        f"{2 * sa.get('sd', 0) / 30 ** 0.5:.3f}.",
        "",
        "Flagged verdicts (the reasoning restates a rubric level far from the score):",
        "",
    ]
    for f in j["flagged"][:10]:
        lines.append(f"- {f['case_id']} scored {f['score']:g}: {f['why']}. Reasoning: \"{f['reasoning'][:240]}\"")
    if not j["flagged"]:
        lines.append("- none")
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
