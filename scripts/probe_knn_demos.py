"""Development probe (dev sets, dev seeds, val only): do demos chosen per input, the train cases most like it,
pay more than the fixed demos a search found?

KATE (Liu et al., 2021, "What makes good in-context examples for GPT-3?") and DSPy's KNNFewShot show each input
the labelled examples nearest to it. For each dev set and seed of the 1,500-call dev spec
(scripts/results/dev_search_1500.toml) this takes the prompt the reflex run at 3d0ac23 returned and scores on
val, with the embedded model: that prompt as it is (its fixed demos, chosen by the search for their val score,
so its val is biased upwards), and the same prompt with as many demos, taken per val input from the train split
by TF-IDF cosine similarity (word unigrams and bigrams, idf from the train split), the most similar last. The
similarity is the one written here before any run; it is not tuned. No search; nothing here reads test.

    python scripts/probe_knn_demos.py [--out scripts/results/probe_knn_demos.jsonl]

Each (set, seed) runs in its own response cache, a copy of that run's (so the fixed prompt costs no calls):
REFLEXOPT_HOME=/tmp/probe-knn/<set>-<seed>; run one (set, seed) per process (--sets X --seeds N).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import sqlite3
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parent.parent
SETS = {"customer_reviews_150": ROOT / "scripts/data/customer_reviews_150.jsonl",
        "trec_questions_150": ROOT / "scripts/data/trec_questions_150.jsonl"}
RUNS = Path("/tmp/reflexopt-bench/3d0ac23")
_WORD = re.compile(r"[a-z0-9']+")


def terms(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]


def tfidf(docs: Sequence[str], idf: dict[str, float] | None = None) -> tuple[list[dict[str, float]], dict[str, float]]:
    bags = [Counter(terms(d)) for d in docs]
    if idf is None:
        df = Counter(t for b in bags for t in b)
        idf = {t: math.log((1 + len(bags)) / (1 + n)) + 1 for t, n in df.items()}
    out = []
    for b in bags:
        v = {t: c * idf[t] for t, c in b.items() if t in idf}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        out.append({t: x / norm for t, x in v.items()})
    return out, idf


def nearest(query: str, pool_vecs: list[dict[str, float]], idf: dict[str, float], k: int) -> list[int]:
    """Indices of the k pool items most similar to `query`, least similar first (the nearest sits last,
    next to the input)."""
    (q,), _ = tfidf([query], idf)
    sims = [sum(w * v.get(t, 0.0) for t, w in q.items()) for v in pool_vecs]
    top = sorted(range(len(pool_vecs)), key=lambda i: (-sims[i], i))[:k]
    return list(reversed(top))


async def probe(name: str, seed: int) -> list[dict]:
    from reflexopt.config import ModelSpec, ScorerSpec
    from reflexopt.data import load_dataset, split
    from reflexopt.evaluate import evaluate_async
    from reflexopt.models import get_client
    from reflexopt.prompt import Demo, load_prompt
    from reflexopt.scoring import make_scorer
    from reflexopt.task import task_spec

    cases = load_dataset(SETS[name])
    sp = split(cases, None, seed)
    best = load_prompt(RUNS / f"{name}-reflex-1500-{seed}.best.md")
    k = len(best.demos)
    spec, _ = task_spec(ModelSpec.parse("local/smollm2"), cases, None)  # the run's cap: its answers are cached
    client = get_client(spec, role="task")
    scorer, _ = make_scorer(ScorerSpec(metric="contains"), list(cases))
    fixed = await evaluate_async(sp.val, best, client, scorer)
    vecs, idf = tfidf([c.input_text for c in sp.train])
    knn_scores: list[float] = []
    same_label: list[float] = []
    for c in sp.val:
        idx = nearest(c.input_text, vecs, idf, k)
        demos = tuple(Demo(sp.train[i].input_text, sp.train[i].ideal or "") for i in idx)
        rep = await evaluate_async([c], best.with_(demos=demos), client, scorer)
        knn_scores.append(rep.results[0].score or 0.0)
        same_label.append(sum(d.output == c.ideal for d in demos) / len(demos))
    f = [r.score or 0.0 for r in fixed.results]
    row = {"set": name, "seed": seed, "k": k, "n_val": len(f), "fixed": round(sum(f) / len(f), 4),
           "knn": round(sum(knn_scores) / len(knn_scores), 4),
           "neighbours_with_the_case_label": round(sum(same_label) / len(same_label), 3),
           "fixed_per_case": f, "knn_per_case": knn_scores}
    print(name, seed, "k", k, "fixed", row["fixed"], "knn", row["knn"], "same-label neighbours",
          row["neighbours_with_the_case_label"], flush=True)
    return [row]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="scripts/results/probe_knn_demos.jsonl")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--sets", default=",".join(SETS))
    a = ap.parse_args()
    out = Path(a.out)
    done = set()
    if out.exists():
        done = {(r["set"], r["seed"]) for r in map(json.loads, out.read_text().splitlines())}
    for seed in map(int, a.seeds.split(",")):
        for name in a.sets.split(","):
            if (name, seed) in done:
                continue
            home = Path(f"/tmp/probe-knn/{name}-{seed}")
            if not home.exists():
                home.mkdir(parents=True)
                src = sqlite3.connect(RUNS / f"home-{name}-reflex-1500-{seed}/cache.sqlite")
                dst = sqlite3.connect(home / "cache.sqlite")
                src.backup(dst)
                src.close()
                dst.close()
            os.environ["REFLEXOPT_HOME"] = str(home)
            rows = asyncio.run(probe(name, seed))
            with out.open("a") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
