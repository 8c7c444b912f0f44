"""scripts/rerun_check.py: a rerun started from the previous run's caches must repeat that run's trials."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import ROOT

_spec = importlib.util.spec_from_file_location("rerun_check", ROOT / "scripts" / "rerun_check.py")
assert _spec and _spec.loader
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)


def _home(work: Path, commit: str, scores: list[float]) -> None:
    run = work / commit / "home-s-reflex-100-1" / "runs" / "20260101-000000-abcd"
    run.mkdir(parents=True)
    (run / "summary.json").write_text("{}")
    rows = [{"id": f"t{i}", "key": f"k{i}", "operator": "demos", "state": "running", "trial": i, "val_mean": None,
             "params": {}} for i in range(1, len(scores) + 1)]
    rows += [{**r, "state": "complete", "val_mean": v} for r, v in zip(rows, scores)]
    (run / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_rerun_passes_only_when_it_repeats_every_trial_of_the_old_run(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _home(tmp_path, "old", [0.5, 0.6])
    _home(tmp_path, "same", [0.5, 0.6, 0.7])  # the old run's trials, then more
    _home(tmp_path, "moved", [0.5, 0.55, 0.7])
    _home(tmp_path, "short", [0.5])
    assert check.main(["old", "same", "--work", str(tmp_path)]) == 0
    assert check.main(["old", "moved", "--work", str(tmp_path)]) == 1
    assert "DIFFER (first at trial 2)" in capsys.readouterr().out
    assert check.main(["old", "short", "--work", str(tmp_path)]) == 1  # it stopped before the old run did
    assert "DIFFER (first at trial 2)" in capsys.readouterr().out
