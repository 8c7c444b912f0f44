"""Make the held-out free-text sets for the LLM-judge benchmark (docs/benchmarks/README.md): public data the
search was never developed on.

Source: the Instruction Induction tasks (Honovich et al., 2022, "Instruction Induction: From Few Examples to
Natural Language Task Descriptions"), as shipped in keirp/automatic_prompt_engineer (MIT) under
`experiments/data/instruction_induction/raw/execute/<task>.json` (the held-out execution examples). From each
task, 60 rows are drawn with a fixed seed; nothing else is filtered or changed.

    python scripts/make_freetext_sets.py /path/to/automatic_prompt_engineer   # writes scripts/data/*.jsonl
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "scripts" / "data"
ROWS = 60
SETS = {"passive_voice": "active_to_passive", "negation": "negation", "num_to_verbal": "num_to_verbal",
        "taxonomy_animal": "taxonomy_animal",
        # the next judge table's held-out pair (docs/benchmarks/judge_next.toml), named on 2026-12-06
        "antonyms": "antonyms", "translation_en_fr": "translation_en-fr",
        # the third judge table's held-out pair (docs/benchmarks/judge_third.toml), named on 2026-12-07
        "singular_to_plural": "singular_to_plural", "letters_list": "letters_list"}

# dev sets (their judge-table runs read) whose other rows are held back for development (`holdout` in
# scripts/results/dev_judge.toml); a held-out set never gets one
REST = ("num_to_verbal", "taxonomy_animal")


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python scripts/make_freetext_sets.py /path/to/automatic_prompt_engineer")
    src = Path(sys.argv[1]) / "experiments" / "data" / "instruction_induction" / "raw" / "execute"
    for name, task in SETS.items():
        examples = json.loads((src / f"{task}.json").read_text(encoding="utf-8"))["examples"]
        rows = [{"input": e["input"].strip(), "ideal": e["output"].strip()}
                for _, e in sorted(examples.items(), key=lambda kv: int(kv[0])) if e["input"].strip()]
        random.Random(f"heldout-{name}").shuffle(rows)
        with (OUT / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for row in rows[:ROWS]:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{name}: {min(ROWS, len(rows))} rows from {task}")
        if name in REST:  # a dev set's held-back rows: the rest of the same draw, in no seed's split
            with (OUT / f"{name}_rest.jsonl").open("w", encoding="utf-8") as f:
                for row in rows[ROWS:]:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            print(f"{name}_rest: {len(rows[ROWS:])} rows")


if __name__ == "__main__":
    main()
