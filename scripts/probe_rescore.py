"""Development probe: score every fully scored candidate of archived judged runs by a deterministic metric.

A judged run accepts a candidate only on the judge's val scores and a gain bar. Where the task has a metric that
checks an answer outright (a plural: `--metric exact`), this scores each candidate the run scored on all of val
(accepted or not) on the seed's val and test splits by that metric, with the task model and no judge, through
`reflexopt eval` as a user would, in a scratch home. It shows what the bar refused: candidates above the
returned prompt by the metric as well as by the judge, or only by the judge. Test is read for the record only,
on sets whose table is complete and read (dev sets); nothing is kept or dropped by it.

    python scripts/probe_rescore.py docs/benchmarks/judge_third.toml docs/benchmarks/runs/judge_third \
        --set singular_to_plural --metric exact --out scripts/results/probe_third_rewrites.jsonl

`--uncoded` also scores each induced instruction (whatever became of it) as `uncoded` writes it
(scripts/probe_uncoded.py; tried in induce and reverted): "Write a function that ... returns the plural" asked as
"Reply with the plural", beside the text the run had. Archived runs (`--keep-runs`) are read from their
tarballs; reflex's run, not the `--no-rewrites` arm's that shares its home. Rows already in --out are skipped,
so it resumes; `--home` keeps the response cache between invocations. Prints one line per candidate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def main() -> None:
    from path_holdout import candidates
    from probe_uncoded import uncoded

    from reflexopt.data import load_dataset, split
    from reflexopt.prompt import parse_prompt

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", type=Path)
    ap.add_argument("kept", type=Path, help="the folder --keep-runs archived the table's runs in")
    ap.add_argument("--set", required=True)
    ap.add_argument("--metric", default="exact")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--uncoded", action="store_true", help="also score each induced instruction as uncoded writes it")
    ap.add_argument("--home", type=Path, help="the response cache's home (default: a scratch folder)")
    args = ap.parse_args()
    spec = tomllib.loads(args.spec.read_text(encoding="utf-8"))
    s = next(x for x in spec["sets"] if x["name"] == args.set)
    cases = load_dataset(ROOT / s["data"])
    done = {(r["seed"], r["candidate"], r["split"]) for r in map(json.loads, args.out.read_text(
        encoding="utf-8").splitlines())} if args.out.exists() else set()
    work = Path(tempfile.mkdtemp(prefix="rescore-"))
    for seed in spec["seeds"]:
        tar = args.kept / f"home-{args.set}-reflex-{spec['budgets'][0]}-{seed}.tar.gz"
        with tarfile.open(tar) as t:
            t.extractall(work / str(seed), filter="data")
        home = next((work / str(seed)).iterdir())
        run, cands, summary = candidates(home)
        parts = split(cases, None, seed=seed)
        for name, part in (("val", parts.val), ("test", parts.test)):
            (work / f"{seed}-{name}.jsonl").write_text("".join(json.dumps({"input": c.input, "ideal": c.ideal})
                                                               + "\n" for c in part), encoding="utf-8")
        full = max((c["n_val"] for c in cands), default=0)
        todo = [(c, c["id"], run / "candidates" / f"{c['id']}.md") for c in cands
                if c["state"] == "complete" and c["n_val"] >= full]
        for c in cands if args.uncoded else []:
            if c["operator"] == "induce":
                own = run / "candidates" / f"{c['id']}.md"
                p = parse_prompt(own.read_text(encoding="utf-8"))
                path = work / f"{seed}-{c['id']}-uncoded.md"
                path.write_text(p.with_(text=uncoded(p.text.strip()) + "\n").to_markdown(), encoding="utf-8")
                todo.append((c, c["id"] + "-uncoded", path))
                if not any(t[0] is c for t in todo[:-1]):  # an induce the run pruned: its own text too
                    todo.append((c, c["id"], own))
        for c, cid, path in todo:
            for name in ("val", "test"):
                if (seed, cid, name) in done:
                    continue
                out = subprocess.run(
                    [sys.executable, "-m", "reflexopt", "eval", str(work / f"{seed}-{name}.jsonl"), str(path),
                     "-m", spec["model"], "--metric", args.metric, "--json"], capture_output=True, text=True,
                    cwd=ROOT, env={**os.environ, "REFLEXOPT_HOME": str(args.home or work / "home")})
                if out.returncode != 0:
                    raise SystemExit(f"{cid} seed {seed}: {out.stderr.strip()[-400:]}")
                row = {"set": args.set, "seed": seed, "candidate": cid, "operator": c["operator"],
                       "state": c["state"], "parent": c["parent"], "returned": cid == summary.get("best_candidate"),
                       "judge_val": c["val_mean"], "split": name, "metric": args.metric,
                       "score": json.loads(out.stdout)["score"]}
                with args.out.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{seed} {cid:>10} {c['operator']:<12} judge val {c['val_mean']:.3f}  "
                      f"{args.metric} {name} {row['score']:.3f}" + ("  (returned)" if row["returned"] else ""))


if __name__ == "__main__":
    main()
