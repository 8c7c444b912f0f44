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

The fourth group (named on 2026-12-07, before any run on them). The earlier groups took each split's own label
mix, and on the imbalanced ones no arm beat the constant answer, so "beat the best hand-written prompt" asked the
search to beat a prompt that answers the majority label. These three are balanced by construction (as many rows
of each label, so a constant answer scores one over the number of labels), and their labels are words (a
label's underscores become spaces), so a hand-written prompt can ask for them as written:
CLINC150 (Larson et al., 2019; clinc/oos-eval at 828f809, CC BY 3.0), six of its 150 intents drawn with a fixed
seed from `data/domains.json`, their `val` and `test` queries in `data/data_full.json` (50 each) pooled and drawn
as above; HWU64 (Liu et al., 2019; xliuhw/NLU-Evaluation-Data at f6071b4, CC BY 4.0), the scenario of a request
to a home assistant (the part of its intent before the first `_`), six of its 18 scenarios drawn with a fixed
seed, from the queries of the ten `CrossValidation/.../KFold_*/testset/annotated/` folds pooled (each query is in
one fold's test set), 34 or 33 of each scenario drawn with a fixed seed; and Word-in-Context as Instruction
Induction prepared it (Pilehvar and Camacho-Collados, 2019; Honovich et al., 2022; keirp/automatic_prompt_engineer
at eac521c, MIT: `experiments/data/instruction_induction/raw/{execute,induce}/word_in_context.json`): does a word
mean the same in two sentences, `same` or `not the same`, 100 of each drawn with a fixed seed.

    python scripts/make_heldout_sets.py /path/to/oos-eval --clinc                     # clinc_intents
    python scripts/make_heldout_sets.py /path/to/NLU-Evaluation-Data --hwu            # hwu_scenarios
    python scripts/make_heldout_sets.py /path/to/automatic_prompt_engineer --wic      # word_in_context

The fifth group (named on 2026-12-07, before any run on them; balanced by construction as the fourth, and screened
as docs/benchmarks/labels_fifth.toml says): the Schema-Guided Dialogue dataset (Rastogi et al., 2020;
google-research-datasets/dstc8-schema-guided-dialogue at e852981, CC BY-SA 4.0), the service domain of a dialogue
(`Restaurants_1` -> `restaurants`, `RentalCars_2` -> `rental cars`) with the user's first turn as input, from the
single-service dialogues of the test files in `SGD_FILES` (the ones the snapshot used here holds), six of the
domains with at least 34 such dialogues drawn with a fixed seed, 34 or 33 of each; StackOverflow titles (Xu et
al., 2015; jacoxu/StackOverflow at 7c207f5, titles from Kaggle's Stack Overflow data, CC BY-SA), the tag of a
question title, six of its 20 tags drawn with a fixed seed, 34 or 33 titles of each; and the SMS Spam Collection
(Almeida et al., 2011; UCI, CC BY 4.0; the copy in hamzaaacodes/sms-spam-collection at f3e73e1, `SMSSpamCollection`,
which adds a header line), `spam` or `not spam`, 100 of each.

    python scripts/make_heldout_sets.py /path/to/dstc8-schema-guided-dialogue --sgd  # sgd_domains
    python scripts/make_heldout_sets.py /path/to/StackOverflow --stackoverflow        # stackoverflow_tags
    python scripts/make_heldout_sets.py /path/to/sms-spam-collection --sms            # sms_spam
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


def write_balanced(name: str, by_label: dict[str, list[dict[str, str]]], out: Path) -> None:
    """ROWS rows with as many of each label as ROWS allows (the first labels in sorted order take one more when
    it does not divide), each label's rows drawn with a seed of the set's name, then shuffled as `write` does."""
    labels = sorted(by_label)
    rows = []
    for i, label in enumerate(labels):
        want = ROWS // len(labels) + (i < ROWS % len(labels))
        pool = by_label[label]
        random.Random(f"heldout-{name}-{label}").shuffle(pool)
        if len(pool) < want:
            raise SystemExit(f"{name}: {len(pool)} rows of {label!r}, fewer than {want}")
        rows += pool[:want]
    write(name, rows, ROWS, out)


def clinc(src: Path) -> None:
    domains = json.loads((src / "data" / "domains.json").read_text(encoding="utf-8"))
    intents = sorted(x for names in domains.values() for x in names)
    chosen = sorted(random.Random("heldout-clinc_intents-labels").sample(intents, 6))
    data = json.loads((src / "data" / "data_full.json").read_text(encoding="utf-8"))
    by_label: dict[str, list[dict[str, str]]] = {}
    for text, intent in data["val"] + data["test"]:
        if intent in chosen and text.strip():
            label = intent.replace("_", " ")
            by_label.setdefault(label, []).append({"input": text.strip(), "ideal": label})
    write_balanced("clinc_intents", by_label, OUT / "clinc_intents.jsonl")


def hwu(src: Path) -> None:
    files = sorted((src / "CrossValidation").glob("autoGeneFromRealAnno/*/CrossValidation/KFold_*/testset/"
                                                  "annotated/*/*.json"))
    pooled: dict[str, list[dict[str, str]]] = {}
    seen = set()
    for f in files:
        for q in json.loads(f.read_text(encoding="utf-8"))["test_data_annotation"]:
            text, scenario = q["text"].strip(), q["intent"].split("_")[0]
            if text and (text, scenario) not in seen:
                seen.add((text, scenario))
                pooled.setdefault(scenario, []).append({"input": text, "ideal": scenario})
    chosen = sorted(random.Random("heldout-hwu_scenarios-labels").sample(sorted(pooled), 6))
    write_balanced("hwu_scenarios", {k: pooled[k] for k in chosen}, OUT / "hwu_scenarios.jsonl")


def wic(src: Path) -> None:
    root = src / "experiments" / "data" / "instruction_induction" / "raw"
    by_label: dict[str, list[dict[str, str]]] = {}
    for part in ("execute", "induce"):
        data = json.loads((root / part / "word_in_context.json").read_text(encoding="utf-8"))
        for ex in data["examples"].values():
            if ex["input"].strip():
                by_label.setdefault(ex["output"], []).append({"input": ex["input"].strip(), "ideal": ex["output"]})
    write_balanced("word_in_context", by_label, OUT / "word_in_context.jsonl")


SGD_FILES = tuple(f"test/dialogues_{i:03d}.json"
                  for i in (*range(1, 12), 13, 14, 15, 17, 18, 20, 21, 24, 25, 30, 32, 33, 34))


def sgd(src: Path) -> None:
    pooled: dict[str, list[dict[str, str]]] = {}
    seen = set()
    for name in SGD_FILES:
        for dialogue in json.loads((src / name).read_text(encoding="utf-8")):
            if len(dialogue["services"]) != 1:
                continue
            service = dialogue["services"][0].split("_")[0]  # RentalCars_2 -> rental cars
            label = "".join(" " + c.lower() if c.isupper() else c for c in service).strip()
            text = dialogue["turns"][0]["utterance"].strip()
            if text and text not in seen:
                seen.add(text)
                pooled.setdefault(label, []).append({"input": text, "ideal": label})
    big = sorted(k for k, v in pooled.items() if len(v) >= 34)
    chosen = sorted(random.Random("heldout-sgd_domains-labels").sample(big, 6))
    write_balanced("sgd_domains", {k: pooled[k] for k in chosen}, OUT / "sgd_domains.jsonl")


STACKOVERFLOW_TAGS = ("wordpress", "oracle", "svn", "apache", "excel", "matlab", "visual-studio", "cocoa", "osx",
                      "bash", "spring", "hibernate", "scala", "sharepoint", "ajax", "qt", "drupal", "linq", "haskell",
                      "magento")  # label ids 1..20, as the source's README lists them


def stackoverflow(src: Path) -> None:
    titles = (src / "rawText" / "title_StackOverflow.txt").read_text(encoding="utf-8").splitlines()
    ids = (src / "rawText" / "label_StackOverflow.txt").read_text(encoding="utf-8").split()
    if len(titles) != len(ids):
        raise SystemExit(f"StackOverflow: {len(titles)} titles but {len(ids)} labels")
    chosen = sorted(random.Random("heldout-stackoverflow_tags-labels").sample(STACKOVERFLOW_TAGS, 6))
    by_label: dict[str, list[dict[str, str]]] = {}
    for title, i in zip(titles, ids):
        tag = STACKOVERFLOW_TAGS[int(i) - 1]
        if tag in chosen and title.strip():
            by_label.setdefault(tag, []).append({"input": title.strip(), "ideal": tag})
    write_balanced("stackoverflow_tags", by_label, OUT / "stackoverflow_tags.jsonl")


def sms(src: Path) -> None:
    by_label: dict[str, list[dict[str, str]]] = {}
    for line in (src / "SMSSpamCollection").read_text(encoding="utf-8").splitlines():
        kind, _, text = line.partition("\t")
        if kind in ("ham", "spam") and text.strip():
            label = "spam" if kind == "spam" else "not spam"
            by_label.setdefault(label, []).append({"input": text.strip(), "ideal": label})
    write_balanced("sms_spam", by_label, OUT / "sms_spam.jsonl")


def main() -> None:
    args = sys.argv[1:]
    one_set = {"--stance": stance, "--banking": banking, "--liar": liar, "--clinc": clinc, "--hwu": hwu, "--wic": wic,
               "--sgd": sgd, "--stackoverflow": stackoverflow, "--sms": sms}
    if len(args) == 2 and args[1] in one_set:
        return one_set[args[1]](Path(args[0]))
    if args[1:] == ["--snips"]:
        return snips(Path(args[0]))
    second = args[1:] == ["--second"]
    if not second and (len(args) not in (1, 3) or (len(args) == 3 and args[1] != "--rows")):
        raise SystemExit("usage: python scripts/make_heldout_sets.py /path/to/tweeteval [--rows N | --second]\n"
                         "       python scripts/make_heldout_sets.py /path/to/tweeteval --stance\n"
                         "       python scripts/make_heldout_sets.py /path/to/nlu-benchmark --snips\n"
                         "       python scripts/make_heldout_sets.py /path/to/task-specific-datasets --banking\n"
                         "       python scripts/make_heldout_sets.py /path/to/LMOps --liar\n"
                         "       python scripts/make_heldout_sets.py /path/to/oos-eval --clinc\n"
                         "       python scripts/make_heldout_sets.py /path/to/NLU-Evaluation-Data --hwu\n"
                         "       python scripts/make_heldout_sets.py /path/to/automatic_prompt_engineer --wic\n"
                         "       python scripts/make_heldout_sets.py /path/to/dstc8-schema-guided-dialogue --sgd\n"
                         "       python scripts/make_heldout_sets.py /path/to/StackOverflow --stackoverflow\n"
                         "       python scripts/make_heldout_sets.py /path/to/sms-spam-collection --sms")
    n = int(args[2]) if len(args) == 3 else ROWS
    for name, (task, words) in (SECOND if second else SETS).items():
        if n != ROWS and name not in LARGE:
            continue
        write(name, tweeteval(Path(args[0]), task, words), n,
              OUT / (f"{name}.jsonl" if n == ROWS else f"{name}_{n}.jsonl"))


if __name__ == "__main__":
    main()
