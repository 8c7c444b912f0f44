"""Development probe: does an induced instruction that asks for code do better or worse than the same
instruction asked as the answer (`uncoded` below; tried in propose.induced, e55a50f, and reverted on this probe)?

It takes the instructions the shipped induce meta-prompt drew from Qwen2.5-Coder-1.5B in
scripts/results/probe_induce.jsonl (template `before`, dev sets, dev seeds 0-2), keeps those `uncoded` changes,
and scores each as written and as uncoded, as the whole prompt (the input below it, as induce writes it over a
text without placeholders), on the seed's val split by a deterministic metric, with the embedded model through
`reflexopt eval`. No judge, no test split.

    python scripts/probe_uncoded.py --set num_to_verbal --metric f1 --out scripts/results/probe_uncoded.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# "Write a function that takes a string as input and returns the plural form of the word.": a code model's
# way of naming a task, whose request (a function) is not what the task model should answer
CODE_TASK = re.compile(r"^(?:write|create|implement|define|develop|build)\s+(?:a|an)\s+(?:[\w-]+\s+)?"
                       r"(?:function|program|script|method|routine)\b[^.]*?\b(?:returns?|outputs?|produces?)\s+"
                       r"(?P<what>[^.]+)\.?\s*", re.I)
CODE_TALK = re.compile(r"\b(?:the|this|your)\s+(?:function|program|script|method|code)\b|\bpython\b", re.I)


def uncoded(text: str) -> str:
    """An instruction that asks for code to do the task, asked as the task itself: "Write a function that takes
    a string as input and returns the plural form of the word. The function should handle ..." becomes "Reply
    with the plural form of the word." (the sentences about the code dropped). Any other text unchanged."""
    m = CODE_TASK.match(text)
    if not m:
        return text
    rest = [x for x in re.split(r"(?<=[.!?])\s+", text[m.end():].strip()) if x and not CODE_TALK.search(x)]
    what = re.sub(r"^its\b", "the input's", m["what"].strip())  # "returns its English name" names the input
    return " ".join([f"Reply with {what}."] + rest)


def main() -> None:
    from reflexopt.data import load_dataset, split

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", required=True)
    ap.add_argument("--metric", default="f1")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    cases = load_dataset(ROOT / "scripts" / "data" / f"{args.set}.jsonl")
    work = Path(tempfile.mkdtemp(prefix="uncoded-"))
    asked = [r for r in map(json.loads, (ROOT / "scripts" / "results" / "probe_induce.jsonl").read_text(
        encoding="utf-8").splitlines()) if r["set"] == args.set and r["template"] == "before" and r["instruction"]]
    for r in asked:
        text = r["instruction"]
        if uncoded(text) == text:
            continue
        val = work / f"{r['seed']}-val.jsonl"
        val.write_text("".join(json.dumps({"input": c.input, "ideal": c.ideal}) + "\n"
                               for c in split(cases, None, seed=r["seed"]).val), encoding="utf-8")
        scores = {}
        for form, instruction in (("as written", text), ("uncoded", uncoded(text))):
            prompt = work / f"{r['seed']}-{form.replace(' ', '_')}.md"
            prompt.write_text(instruction + "\n", encoding="utf-8")
            out = subprocess.run([sys.executable, "-m", "reflexopt", "eval", str(val), str(prompt), "-m",
                                  "local/smollm2", "--metric", args.metric, "--json"], capture_output=True, text=True,
                                 cwd=ROOT, env={**os.environ, "REFLEXOPT_HOME": str(work / "home")})
            if out.returncode != 0:
                raise SystemExit(out.stderr.strip()[-400:])
            scores[form] = json.loads(out.stdout)["score"]
        row = {"set": args.set, "seed": r["seed"], "metric": args.metric, "instruction": text,
               "uncoded": uncoded(text), "val": scores}
        with args.out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{args.set} seed {r['seed']}: {args.metric} on val {scores['as written']:.3f} as written, "
              f"{scores['uncoded']:.3f} uncoded")


if __name__ == "__main__":
    main()
