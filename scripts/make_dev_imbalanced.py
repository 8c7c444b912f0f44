"""Make the development variants for label search on imbalanced sets (scripts/results/dev_imbalanced.toml), from
rows of the first tweet group, which no longer counts as held out for a label-search change (scripts/data/README.md).

- `tweet_irony_rest.jsonl`, `tweet_emotion_rest.jsonl`: rows 201-400 of the `_750` files (the 200-row sets are
  their first 200 rows): held-back rows that no seed's split of the 200-row sets contains.
- `tweet_irony_skew.jsonl`: 200 rows, three in four `not ironic` (150/50), as skewed as the hardest held-out
  binary set (tweet_offensive, 149/51): the first 150 `not ironic` and the first 50 `ironic` of rows 401-750, in
  draw order. `tweet_irony_skew_rest.jsonl`: 120 rows at the same ratio (90/30) from rows 201-400.

Nothing is filtered by content or changed; only which rows, by label and position.

    python scripts/make_dev_imbalanced.py   # writes the four files into scripts/data/
"""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def rows(name: str) -> list[dict[str, str]]:
    return [json.loads(x) for x in (DATA / name).read_text(encoding="utf-8").splitlines() if x.strip()]


def take(pool: list[dict[str, str]], want: dict[str, int]) -> list[dict[str, str]]:
    """The first `want[label]` rows of each label, in the pool's order."""
    left, out = dict(want), []
    for r in pool:
        if left.get(r["ideal"], 0) > 0:
            left[r["ideal"]] -= 1
            out.append(r)
    if any(left.values()):
        raise SystemExit(f"not enough rows: {left}")
    return out


def write(name: str, out: list[dict[str, str]]) -> None:
    (DATA / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out), encoding="utf-8")


def main() -> None:
    for s in ("tweet_irony", "tweet_emotion"):
        write(f"{s}_rest.jsonl", rows(f"{s}_750.jsonl")[200:400])
    irony = rows("tweet_irony_750.jsonl")
    write("tweet_irony_skew.jsonl", take(irony[400:], {"not ironic": 150, "ironic": 50}))
    write("tweet_irony_skew_rest.jsonl", take(irony[200:400], {"not ironic": 90, "ironic": 30}))


if __name__ == "__main__":
    main()
