"""Make the held-out label sets: public data the search was never developed on (see docs/benchmarks/README.md).

Source (first group, read by the label table at c5ff4ae): TweetEval (Barbieri et al., 2020),
github.com/cardiffnlp/tweeteval, `datasets/<task>/test_text.txt` and
`test_labels.txt`. TweetEval is released without restrictions of its own; each task keeps its original terms
(emotion: SemEval-2018 Task 1; sentiment: SemEval-2017 Task 4; irony: SemEval-2018 Task 3) and Twitter's.
From each task's test split, 200 rows are drawn with a fixed seed (no other filtering: the label mix is the
split's own, imbalanced), label ids become the words below. The larger sets (`--rows 750`, for a val split large
enough that a paired test can show a cheaper prompt is not worse) are the first 750 rows of the same draw, so
each holds its 200-row set.

    python scripts/make_heldout_sets.py /path/to/tweeteval              # writes scripts/data/tweet_*.jsonl
    python scripts/make_heldout_sets.py /path/to/tweeteval --rows 750   # tweet_emotion_750, tweet_irony_750

The second group (named on 2026-12-06, before any run on them, for the next label table): TweetEval's hate
(SemEval-2019 Task 5, HatEval) and offensive (SemEval-2019 Task 6, OLID) test splits, drawn as above, and the
Snips intents (Coucke et al., 2018; sonos/nlu-benchmark, CC0 1.0): the seven `validate_<Intent>.json` files of
`2017-06-custom-intent-engines` (100 queries each), pooled and drawn the same way, the intent name as the label.

    python scripts/make_heldout_sets.py /path/to/tweeteval --second     # tweet_hate, tweet_offensive
    python scripts/make_heldout_sets.py /path/to/nlu-benchmark --snips  # snips_intents

The third group (named on 2026-12-07, before any run on them, for the label table at the commit carrying the
imbalanced-label change): TweetEval's stance towards feminism (SemEval-2016 Task 6) test split, drawn as above
(`none` / `against` / `favor`); BANKING77 (Casanueva et al., 2020; PolyAI-LDN/task-specific-datasets at 57ec275,
CC BY 4.0), six of its 77 intents drawn with a fixed seed from `banking_data/categories.json`, their
`banking_data/test.csv` queries pooled and drawn as above, the intent name as the label (without the `?` one
of them ends with); and LIAR (Wang, 2017) as
microsoft/LMOps prepared it for prompt optimization (`prompt_optimization/data/liar/test.jsonl` at 4f2a9de, MIT:
the statements rated false or true, with speaker, party and context), drawn as above, its label 1 (rated false)
as `false` and 0 as `true`.

    python scripts/make_heldout_sets.py /path/to/tweeteval --stance                  # tweet_stance_feminist
    python scripts/make_heldout_sets.py /path/to/task-specific-datasets --banking    # banking_intents
    python scripts/make_heldout_sets.py /path/to/LMOps --liar                        # liar_statements
"""

from __future__ import annotations

import csv
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
SECOND = {
    "tweet_hate": ("hate", ["not hate", "hate"]),
    "tweet_offensive": ("offensive", ["not offensive", "offensive"]),
}
INTENTS = ("AddToPlaylist", "BookRestaurant", "GetWeather", "PlayMusic", "RateBook", "SearchCreativeWork",
           "SearchScreeningEvent")


def write(name: str, rows: list[dict[str, str]], n: int, out: Path) -> None:
    """`n` rows of `rows` after a shuffle seeded by the set's name, as JSON lines."""
    random.Random(f"heldout-{name}").shuffle(rows)
    if len(rows) < n:
        raise SystemExit(f"{name}: {len(rows)} rows, fewer than {n}")
    with out.open("w", encoding="utf-8") as f:
        for r in rows[:n]:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def snips(src: Path) -> None:
    rows = []
    for intent in INTENTS:
        data = json.loads((src / "2017-06-custom-intent-engines" / intent / f"validate_{intent}.json")
                          .read_text(encoding="utf-8"))
        for q in data[intent]:
            text = "".join(part["text"] for part in q["data"]).strip()
            if text:
                rows.append({"input": text, "ideal": intent})
    write("snips_intents", rows, ROWS, OUT / "snips_intents.jsonl")


def tweeteval(src: Path, task: str, words: list[str]) -> list[dict[str, str]]:
    """A TweetEval task's test split (`datasets/<task>/test_text.txt`, `test_labels.txt`), label ids as words."""
    texts = (src / "datasets" / task / "test_text.txt").read_text(encoding="utf-8").splitlines()
    labels = (src / "datasets" / task / "test_labels.txt").read_text(encoding="utf-8").split()
    if len(texts) != len(labels):
        raise SystemExit(f"{task}: {len(texts)} texts but {len(labels)} labels")
    return [{"input": t.strip(), "ideal": words[int(y)]} for t, y in zip(texts, labels) if t.strip()]


def stance(src: Path) -> None:
    rows = tweeteval(src, "stance/feminist", ["none", "against", "favor"])  # datasets/stance/mapping.txt
    write("tweet_stance_feminist", rows, ROWS, OUT / "tweet_stance_feminist.jsonl")


def banking(src: Path) -> None:
    cats = json.loads((src / "banking_data" / "categories.json").read_text(encoding="utf-8"))
    chosen = sorted(random.Random("heldout-banking_intents-labels").sample(cats, 6))
    with (src / "banking_data" / "test.csv").open(encoding="utf-8", newline="") as f:
        rows = [{"input": r["text"].strip(), "ideal": r["category"].rstrip("?")} for r in csv.DictReader(f)
                if r["category"] in chosen and r["text"].strip()]
    write("banking_intents", rows, ROWS, OUT / "banking_intents.jsonl")


def liar(src: Path) -> None:
    path = src / "prompt_optimization" / "data" / "liar" / "test.jsonl"
    rows = [{"input": r["text"].strip(), "ideal": "false" if int(r["label"]) == 1 else "true"}
            for r in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if r["text"].strip()]
    write("liar_statements", rows, ROWS, OUT / "liar_statements.jsonl")


def main() -> None:
    args = sys.argv[1:]
    third = {"--stance": stance, "--banking": banking, "--liar": liar}
    if len(args) == 2 and args[1] in third:
        return third[args[1]](Path(args[0]))
    if args[1:] == ["--snips"]:
        return snips(Path(args[0]))
    second = args[1:] == ["--second"]
    if not second and (len(args) not in (1, 3) or (len(args) == 3 and args[1] != "--rows")):
        raise SystemExit("usage: python scripts/make_heldout_sets.py /path/to/tweeteval [--rows N | --second]\n"
                         "       python scripts/make_heldout_sets.py /path/to/tweeteval --stance\n"
                         "       python scripts/make_heldout_sets.py /path/to/nlu-benchmark --snips\n"
                         "       python scripts/make_heldout_sets.py /path/to/task-specific-datasets --banking\n"
                         "       python scripts/make_heldout_sets.py /path/to/LMOps --liar")
    n = int(args[2]) if len(args) == 3 else ROWS
    for name, (task, words) in (SECOND if second else SETS).items():
        if n != ROWS and name not in LARGE:
            continue
        write(name, tweeteval(Path(args[0]), task, words), n,
              OUT / (f"{name}.jsonl" if n == ROWS else f"{name}_{n}.jsonl"))


if __name__ == "__main__":
    main()
