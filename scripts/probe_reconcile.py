"""Development probe (dev sets, no task model): does asking the judge again fix a verdict that contradicts itself?

In the archived runs of the second judge table (docs/benchmarks/runs/judge_next/: antonyms and translation_en_fr,
dev sets since that table was read), Qwen2.5-Coder-1.5B passed 14 of its 63 distinct passes with a 4 of 5 whose
reasoning opened "The AI response does not match the reference answer." (judge.reasoning_contradiction). This
probe takes every distinct verdict of those runs whose reasoning contradicts its score, judges the same answer
again through the judge's own code (JudgeScorer.score: the first verdict, and, when it contradicts itself, the
request asked once more with the contradiction named), and records the archived verdict, the live first verdict,
the final one and whether the answer is the reference (accents and case aside). Nothing here reads a val or test
split to choose anything: the verdicts probed are the archived runs' own.

Rule, written before the probe ran: keep the re-ask if the final verdicts agree with "is the reference" on more
of these answers than the first verdicts do, and pass no answer that is not the reference and that the first
verdict failed, except where a reader of the answer would pass it (listed in the output).

    python scripts/probe_reconcile.py --runs docs/benchmarks/runs/judge_next --out scripts/results/probe_reconcile.jsonl

It ran at 6a78eca, the commit that has the re-ask (JudgeScorer._reconcile); the re-ask was removed after it (no
verdict moved: scripts/results/probe_reconcile.md), so rerun it in a checkout of that commit (`git worktree add
/tmp/reconcile 6a78eca`). `--paraphrase` (any later commit) probes the second opinion instead: each of the same
verdicts asked once on the paraphrased request (`judge_alt`, a request of its own, at temperature 0), into
scripts/results/probe_second_opinion.jsonl by default; `--paraphrase --disjoint` the same for the passes that
share no word with a short reference (and do not contradict their score), into probe_second_opinion_disjoint.jsonl.

Rows already in --out are skipped, so it resumes. The judge is Qwen served by reflexopt (`local/PATH.gguf`).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import tarfile
import unicodedata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
JUDGE = "local/~/.cache/reflexopt-bench/qwen/qwen.gguf@timeout_s=900"


def plain(text: str) -> str:
    """Lower case, accents and surrounding punctuation off: "Réflexion." and "reflexion" are one answer."""
    s = unicodedata.normalize("NFKD", text.strip().lower())
    return "".join(c for c in s if not unicodedata.combining(c)).strip(" .,'\"!\n")


def disjoint_from_reference(ideal: str, output: str, short: int = 3) -> bool:
    """The reference is short (up to `short` words) and the answer shares no word with it (words cut to 5
    letters, accents off): a pass of such an answer may be right (a synonym, another translation), but is
    suspect."""
    def stems(text: str) -> set[str]:
        return {w[:5] for w in re.findall(r"[a-z0-9]+", plain(text))}

    ref = stems(ideal)
    return 0 < len(ideal.split()) <= short and bool(ref) and not (ref & stems(output))


def archived(runs: Path) -> list[dict[str, Any]]:
    """Each distinct judged answer (set, input, output, reference) of the archived runs, with its verdict."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for archive in sorted(runs.glob("*.tar.gz")):
        name = archive.name.removeprefix("home-").split("-")[0]
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if not member.name.endswith("evals.jsonl"):
                    continue
                f = tar.extractfile(member)
                assert f is not None
                for line in io.TextIOWrapper(f, encoding="utf-8"):
                    r = json.loads(line)
                    if r.get("score") is None or not r.get("reasoning") or r.get("ideal") is None:
                        continue
                    out.setdefault((name, r["input"], r["output"]), {
                        "set": name, "input": r["input"], "output": r["output"], "ideal": r["ideal"],
                        "archived_raw": 1 + 4 * r["score"], "archived_reasoning": r["reasoning"]})
    return list(out.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=Path, default=ROOT / "docs/benchmarks/runs/judge_next")
    ap.add_argument("--out", type=Path, default=ROOT / "scripts/results/probe_reconcile.jsonl")
    ap.add_argument("--judge", default=JUDGE)
    ap.add_argument("--paraphrase", action="store_true",
                    help="ask each verdict's paraphrased request (the second opinion) instead of the re-ask")
    ap.add_argument("--disjoint", action="store_true",
                    help="with --paraphrase: the passes that share no word with a short reference "
                         "(disjoint_from_reference) and do not contradict their score, instead")
    args = ap.parse_args()
    if args.paraphrase:
        second_opinions(args)
        return

    from reflexopt.config import model_spec
    from reflexopt.data import Case
    from reflexopt.judge import JudgeScorer, load_rubric, reasoning_contradiction
    from reflexopt.models import get_client

    rubric = load_rubric("correctness")
    items = [x for x in archived(args.runs)
             if reasoning_contradiction(rubric, x["archived_raw"], x["archived_reasoning"])]
    done = {(r["set"], r["input"], r["output"]) for r in (
        json.loads(x) for x in (args.out.read_text(encoding="utf-8").splitlines() if args.out.exists() else [])
        if x.strip())}
    scorer = JudgeScorer(get_client(model_spec(args.judge), role="judge"), rubric)
    print(f"{len(items)} archived verdicts contradict their score; {len(done)} probed before")
    for i, x in enumerate(items):
        if (x["set"], x["input"], x["output"]) in done:
            continue
        case = Case(id=str(i), input=x["input"], ideal=x["ideal"])
        s = asyncio.run(scorer.score(case, x["output"]))
        flag = s.flag or ""
        found = re.search(r"(?:passes it with|but scores) (\d+(?:\.\d+)?)", flag)
        first = float(found.group(1)) if found else s.raw  # not contradicting now: the first verdict stands
        row = {**x, "is_reference": plain(x["output"]) == plain(x["ideal"]), "flag": flag,
               "final_raw": s.raw, "final_passed": s.passed, "final_reasoning": s.reasoning, "calls": s.calls,
               "asked_again": "asked again" in flag, "first_raw_live": first}
        with args.out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{x['set']} {x['input']!r} -> {x['output'][:40]!r} (ref {x['ideal']!r}): archived "
              f"{x['archived_raw']:g}, final {s.raw} ({'asked again' if row['asked_again'] else 'not asked again'})",
              flush=True)


def second_opinions(args: argparse.Namespace) -> None:
    """Each contradicting archived verdict asked once on the paraphrased request, its score beside the first and
    their mean (what JudgeScorer keeps)."""
    from reflexopt.config import model_spec
    from reflexopt.data import Case
    from reflexopt.judge import JudgeScorer, load_rubric, reasoning_contradiction
    from reflexopt.models import get_client

    rubric = load_rubric("correctness")

    def chosen(x: dict[str, Any]) -> bool:
        contradicts = reasoning_contradiction(rubric, x["archived_raw"], x["archived_reasoning"]) is not None
        if not args.disjoint:
            return contradicts
        return (not contradicts and x["archived_raw"] >= rubric.pass_score and not x["archived_reasoning"].startswith(
            "says exactly") and disjoint_from_reference(x["ideal"], x["output"]))

    name = "probe_second_opinion_disjoint.jsonl" if args.disjoint else "probe_second_opinion.jsonl"
    out = args.out if args.out.name != "probe_reconcile.jsonl" else args.out.with_name(name)
    done = {(r["set"], r["input"], r["output"]) for r in (
        json.loads(x) for x in (out.read_text(encoding="utf-8").splitlines() if out.exists() else []) if x.strip())}
    scorer = JudgeScorer(get_client(model_spec(args.judge), role="judge"), rubric)
    for i, x in enumerate(archived(args.runs)):
        if (x["set"], x["input"], x["output"]) in done or not chosen(x):
            continue
        s = asyncio.run(scorer.ask(Case(id=str(i), input=x["input"], ideal=x["ideal"]), x["output"],
                                   variant="judge_alt"))
        if s.raw is None:
            continue
        mean = (x["archived_raw"] + s.raw) / 2
        row = {"set": x["set"], "input": x["input"], "output": x["output"], "ideal": x["ideal"],
               "is_reference": plain(x["output"]) == plain(x["ideal"]), "first_raw": x["archived_raw"],
               "first_reasoning": x["archived_reasoning"], "second_raw": s.raw,
               "second_reasoning_head": s.reasoning[:160], "mean": mean,
               "first_passed": x["archived_raw"] >= rubric.pass_score, "final_passed": mean >= rubric.pass_score}
        with out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{x['set']} {x['input']!r}: first {x['archived_raw']:g}, second opinion {s.raw:g}", flush=True)


if __name__ == "__main__":
    main()
