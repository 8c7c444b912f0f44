"""Make the held-out label sets: public data the search was never developed on (see docs/benchmarks/README.md).

Source: TweetEval (Barbieri et al., 2020), github.com/cardiffnlp/tweeteval, `datasets/<task>/test_text.txt` and
`test_labels.txt`. TweetEval is released without restrictions of its own; each task keeps its original terms
(emotion: SemEval-2018 Task 1; sentiment: SemEval-2017 Task 4; irony: SemEval-2018 Task 3) and Twitter's.
From each task's test split, 200 rows are drawn with a fixed seed (no other filtering: the label mix is the
split's own, imbalanced), label ids become the words below.

    python scripts/make_heldout_sets.py /path/to/tweeteval   # writes scripts/data/tweet_*.jsonl
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "scripts" / "data"
ROWS = 200
SETS = {
    "tweet_emotion": ("emotion", ["anger", "joy", "optimism", "sadness"]),
    "tweet_sentiment": ("sentiment", ["negative", "neutral", "positive"]),
    "tweet_irony": ("irony", ["not ironic", "ironic"]),
}


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python scripts/make_heldout_sets.py /path/to/tweeteval")
    src = Path(sys.argv[1]) / "datasets"
    for name, (task, words) in SETS.items():
        texts = (src / task / "test_text.txt").read_text(encoding="utf-8").splitlines()
        labels = (src / task / "test_labels.txt").read_text(encoding="utf-8").split()
        if len(texts) != len(labels):
            raise SystemExit(f"{task}: {len(texts)} texts but {len(labels)} labels")
        rows = [{"input": t.strip(), "ideal": words[int(y)]} for t, y in zip(texts, labels) if t.strip()]
        random.Random(f"heldout-{name}").shuffle(rows)
        with (OUT / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for r in rows[:ROWS]:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
