"""Make the held-out label sets: public data the search was never developed on (see docs/benchmarks/README.md).

Source: TweetEval (Barbieri et al., 2020), github.com/cardiffnlp/tweeteval, `datasets/<task>/test_text.txt` and
`test_labels.txt`. TweetEval is released without restrictions of its own; each task keeps its original terms
(emotion: SemEval-2018 Task 1; sentiment: SemEval-2017 Task 4; irony: SemEval-2018 Task 3) and Twitter's.
From each task's test split, 200 rows are drawn with a fixed seed (no other filtering: the label mix is the
split's own, imbalanced), label ids become the words below. The larger sets (`--rows 750`, for a val split large
enough that a paired test can show a cheaper prompt is not worse) are the first 750 rows of the same draw, so
each holds its 200-row set.

    python scripts/make_heldout_sets.py /path/to/tweeteval              # writes scripts/data/tweet_*.jsonl
    python scripts/make_heldout_sets.py /path/to/tweeteval --rows 750   # tweet_emotion_750, tweet_irony_750
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "scripts" / "data"
ROWS = 200
LARGE = ("tweet_emotion", "tweet_irony")  # the sets made at other sizes
SETS = {
    "tweet_emotion": ("emotion", ["anger", "joy", "optimism", "sadness"]),
    "tweet_sentiment": ("sentiment", ["negative", "neutral", "positive"]),
    "tweet_irony": ("irony", ["not ironic", "ironic"]),
}


def main() -> None:
    args = sys.argv[1:]
    if len(args) not in (1, 3) or (len(args) == 3 and args[1] != "--rows"):
        raise SystemExit("usage: python scripts/make_heldout_sets.py /path/to/tweeteval [--rows N]")
    n = int(args[2]) if len(args) == 3 else ROWS
    src = Path(args[0]) / "datasets"
    for name, (task, words) in SETS.items():
        if n != ROWS and name not in LARGE:
            continue
        texts = (src / task / "test_text.txt").read_text(encoding="utf-8").splitlines()
        labels = (src / task / "test_labels.txt").read_text(encoding="utf-8").split()
        if len(texts) != len(labels):
            raise SystemExit(f"{task}: {len(texts)} texts but {len(labels)} labels")
        rows = [{"input": t.strip(), "ideal": words[int(y)]} for t, y in zip(texts, labels) if t.strip()]
        random.Random(f"heldout-{name}").shuffle(rows)
        if len(rows) < n:
            raise SystemExit(f"{task}: {len(rows)} rows, fewer than {n}")
        out = OUT / (f"{name}.jsonl" if n == ROWS else f"{name}_{n}.jsonl")
        with out.open("w", encoding="utf-8") as f:
            for r in rows[:n]:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
