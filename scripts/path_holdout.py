"""Development probe (dev spec with held-back rows, dev seeds): do the steps a run accepted pay on rows the search
never saw?

For each finished run of a development spec whose sets have `holdout` rows (scripts/results/dev_search_1500.toml),
this scores on those rows every candidate on the run's accepted path (the successive new bests) and the run's
other top candidates by val, in the run's own home (its response cache), with the embedded model, through
`reflexopt eval` as a user would. It shows whether the later accepted steps, most of them demo draws made after
patience, are worth their val gain outside val: the selection effect the label table pointed at (its returned
prompts' val scores exceed their test scores by 0.088 at 1,500 calls). Nothing here reads any test split.

    python scripts/path_holdout.py scripts/results/dev_search_1500.toml ROWS.jsonl [ROWS.jsonl ...] \
        --out /tmp/path.jsonl [--top 3] [--seeds 0 1] [--sets customer_reviews_150]

A judged spec (scripts/results/dev_judge.toml) scores with its judge and rubric (`--self-agreement 0`: the
redraws are the run's business, not the probe's), and prints each candidate's paired t over the start on val:
the number the acceptance bar under a noisy judge reads. `--top -1` scores every fully scored candidate, `--arms
reflex "reflex, no rewrites"` the ablation's runs too (they share reflex's home; told apart by their settings),
`--rules` only the candidates one of gate_replay.py's acceptance rules accepts (what each rule would return).

Rows already in --out are skipped, so it resumes. Prints one table per run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def candidates(home: Path, rewrites: bool = True) -> tuple[Path, list[dict[str, Any]], dict[str, Any]]:
    """The finished run in a bench home (the last, of those with or without the reasoning model's rewrites as
    `rewrites` says: a `--no-rewrites` arm shares reflex's home), its candidates (latest record of each, trial
    order) and its summary."""
    runs = [p.parent for p in sorted(home.glob("runs/*/summary.json"))
            if json.loads((p.parent / "config.json").read_text(encoding="utf-8")).get("rewrites", True) == rewrites]
    run = runs[-1]
    latest: dict[str, dict[str, Any]] = {}
    for line in (run / "candidates.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            c = json.loads(line)
            latest[c["id"]] = c
    return run, list(latest.values()), json.loads((run / "summary.json").read_text(encoding="utf-8"))


def val_scores(run: Path) -> dict[str, dict[str, float]]:
    """Each candidate's (by prompt key) per-case val scores, from the run's evals."""
    from reflexopt.store import RunStore

    out: dict[str, dict[str, float]] = {}
    for (key, split, case), (res, _) in RunStore(run).evals().items():
        if split == "val" and res.score is not None:
            out.setdefault(key, {})[case] = res.score
    return out


def step_stats(cands: list[dict[str, Any]], path: list[str], val: dict[str, dict[str, float]]) -> dict[str, Any]:
    """For each accepted step after the start: the candidates tried since its predecessor on the path became the
    best (k, duplicates left out), the val cases it wins and loses against that predecessor, and the one-sided
    sign-test p of those (how likely a gain that large is by chance for one candidate; k of them were tried)."""
    by = {c["id"]: c for c in cands}
    out = {}
    for prev, cur in zip(path, path[1:]):
        a, b = val.get(by[prev]["key"], {}), val.get(by[cur]["key"], {})
        w = sum(1 for i in b if b[i] > a.get(i, 0.0))
        lost = sum(1 for i in b if b[i] < a.get(i, 0.0))
        t0, t1 = by[prev].get("trial") or 0, by[cur].get("trial") or 0
        k = sum(1 for c in cands if c["id"] != "baseline" and t0 < (c.get("trial") or 0) <= t1
                and c["state"] != "duplicate")
        p = sum(math.comb(w + lost, i) for i in range(w, w + lost + 1)) / 2 ** (w + lost)
        out[cur] = {"prev": prev, "k": k, "wins": w, "losses": lost, "p": p}
    return out


def paired_t(a: dict[str, float], b: dict[str, float]) -> float | None:
    """The paired t of b's val gain over a's on the cases both scored (the mean difference over its standard
    error: what pool.select's bar under a noisy judge reads); None when no case moved."""
    d = [b[i] - a[i] for i in b if i in a]
    if len(d) < 2:
        return None
    m = sum(d) / len(d)
    sd = math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1))
    return None if sd == 0 else m / (sd / math.sqrt(len(d)))


def t_text(t: float | None) -> str:
    return "-" if t is None else f"{t:+.2f}"


def picked(cands: list[dict[str, Any]], summary: dict[str, Any], top: int) -> list[dict[str, Any]]:
    """The accepted path and the `top` other fully scored candidates with the highest val (top < 0: all)."""
    path = set(summary.get("accepted_path") or [])
    n_val = max((c.get("n_val") or 0) for c in cands)
    full = [c for c in cands if c["state"] == "complete" and c.get("n_val") == n_val]
    others = sorted((c for c in full if c["id"] not in path), key=lambda c: -(c.get("val_mean") or 0))
    others = others if top < 0 else others[:top]
    return [c for c in cands if c["id"] in path or c in others]


def score(holdout: Path, prompt: Path, home: Path, model: str, args: list[str]) -> float:
    argv = [sys.executable, "-m", "reflexopt", "eval", str(holdout), str(prompt), "-m", model, *args, "--json"]
    p = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "REFLEXOPT_HOME": str(home), "PYTHONPATH": str(ROOT)})
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{p.stderr[-2000:]}")
    return float(json.loads(p.stdout)["score"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", type=Path)
    ap.add_argument("rows", type=Path, nargs="+", help="the bench rows of the runs (their commit, set and seed)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--top", type=int, default=3, help="other candidates by val to score (-1: every one)")
    ap.add_argument("--arms", nargs="+", default=["reflex"], help="reflex, and with rewrites off its ablation arm")
    ap.add_argument("--rules", action="store_true",
                    help="score only the candidates some acceptance rule of scripts/gate_replay.py accepts (a judged "
                         "spec: the bar before, now, a paired t above 1, any gain) instead of --top")
    ap.add_argument("--sets", nargs="+")
    ap.add_argument("--seeds", nargs="+", type=int)
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "reflexopt-bench"))
    ap.add_argument("--kept", type=Path, help="the runs' archives (bench.py --keep-runs): a run not in --work is "
                                              "unpacked there from its archive (without its response cache)")
    a = ap.parse_args()
    spec = tomllib.loads(a.spec.read_text(encoding="utf-8"))
    sets = {s["name"]: s for s in spec["sets"]}
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench import cli_options, eval_args, restore_run
    from gate_replay import paths

    args = eval_args(spec.get("args", []), cli_options(ROOT))  # a judge spec's --judge and rubric, not its reasoner
    if "--judge" in args:
        args += ["--self-agreement", "0"]
    homes = {arm["name"]: (arm.get("home") or arm["name"], "--no-rewrites" not in arm.get("args", []))
             for arm in spec["arms"]}
    done = {(r["set"], r["seed"], r["commit"], r.get("arm", "reflex"), r["id"]) for r in (
        json.loads(x) for x in (a.out.read_text(encoding="utf-8").splitlines() if a.out.exists() else []) if x)}
    for rows in a.rows:
        for row in (json.loads(x) for x in rows.read_text(encoding="utf-8").splitlines() if x.strip()):
            s = sets.get(row["set"])
            if (row["arm"] not in a.arms or s is None or "holdout" not in s or (a.sets and row["set"] not in a.sets)
                    or (a.seeds and row["seed"] not in a.seeds)):
                continue
            folder = Path(a.work) / (row["commit"] + ("-dirty" if row.get("dirty") else ""))
            where, rewrites = homes[row["arm"]]
            home = folder / f"home-{row['set']}-{where}-{row['budget']}-{row['seed']}"
            if a.kept:
                restore_run(home, a.kept)
            run, cands, summary = candidates(home, rewrites)
            path = summary.get("accepted_path") or []
            val = val_scores(run)
            steps = step_stats(cands, path, val)
            start = val.get(next(c["key"] for c in cands if c["id"] == "baseline"), {})
            print(f"\n{row['set']} {row['arm']} seed {row['seed']} @ {row['commit']}: returned "
                  f"{summary['best_candidate']}")
            print("| candidate | operator | redraw | parent | on path: predecessor, tried since, val wins-losses, p "
                  "| val | t over start | held-back |")
            print("|---|---|---|---|---|---|---|---|")
            rules = paths(run) if a.rules else {}
            if rules:
                print("rules: " + "; ".join(f"{k}: {' > '.join(v)}" for k, v in rules.items()))
            ruled = {i for v in rules.values() for i in v}
            for c in ([c for c in cands if c["id"] in ruled] if a.rules else picked(cands, summary, a.top)):
                key = (row["set"], row["seed"], row["commit"], row["arm"], c["id"])
                if key not in done:
                    h = score(ROOT / s["holdout"], run / "candidates" / f"{c['id']}.md", home, spec["model"], args)
                    rec = {"set": row["set"], "seed": row["seed"], "commit": row["commit"], "arm": row["arm"],
                           "id": c["id"], "t_vs_start": paired_t(start, val.get(c["key"], {})),
                           "operator": c["operator"], "redraw": bool(c["params"].get("redraw")),
                           "parent": c["parent"], "trial": c.get("trial"), "on_path": c["id"] in path,
                           "returned": c["id"] == summary["best_candidate"], "val": c["val_mean"],
                           "n_val": c["n_val"], "holdout": h, "step": steps.get(c["id"])}
                    with a.out.open("a", encoding="utf-8") as f:
                        f.write(json.dumps(rec) + "\n")
                    done.add(key)
            for r in (json.loads(x) for x in a.out.read_text(encoding="utf-8").splitlines() if x):
                if (r["set"], r["seed"], r["commit"], r.get("arm", "reflex")) == (row["set"], row["seed"],
                                                                                 row["commit"], row["arm"]):
                    st = r.get("step")
                    on = (f"after {st['prev']}, {st['k']} tried, {st['wins']}-{st['losses']}, p {st['p']:.3f}"
                          if st else ("yes" if r["on_path"] else ""))
                    print(f"| {r['id']}{' (returned)' if r['returned'] else ''} | {r['operator']} | "
                          f"{'yes' if r['redraw'] else ''} | {r['parent'] or ''} | {on} "
                          f"| {r['val']:.3f} | {t_text(r.get('t_vs_start'))} | {r['holdout']:.3f} |")


if __name__ == "__main__":
    main()
