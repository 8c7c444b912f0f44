"""Derive a third public classification set for benchmarks: the type of a security incident from its summary.

Source: ../shared/data/security_incidents.jsonl (aevyraai/reflex, examples/security_incidents.jsonl,
Apache-2.0). Each report's first section (SUMMARY, OVERVIEW or DESCRIPTION) becomes the input, and the type
from its `Classification:` line (e.g. "High — Credential Phishing" -> "Credential Phishing") the reference
label; the line itself is not in the input. 100 rows, 10 labels.

    python scripts/make_incident_types.py   # writes scripts/data/incident_types.jsonl
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT.parent / "shared" / "data" / "security_incidents.jsonl"
OUT = ROOT / "scripts" / "data" / "incident_types.jsonl"


def main() -> None:
    rows = []
    for line in SRC.read_text(encoding="utf-8").splitlines():
        report = json.loads(line)["messages"][0]["content"]
        label = re.search(r"^Classification: \w+ \u2014 (.+)$", report, re.M)
        summary = re.search(r"^(?:EXECUTIVE |INCIDENT )?(?:SUMMARY|OVERVIEW|DESCRIPTION)\n(.+?)(?:\n\n|\Z)", report,
                            re.M | re.S)
        if not label or not summary:
            raise SystemExit(f"unexpected report layout: {report[:200]!r}")
        rows.append({"input": " ".join(summary.group(1).split()), "ideal": label.group(1).strip()})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} rows -> {OUT}")


if __name__ == "__main__":
    main()
