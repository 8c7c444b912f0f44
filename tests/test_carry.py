"""scripts/carry.py: a run's response cache, carried to another machine through the repository, answers as before."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from conftest import ROOT

from reflexopt.models.base import RawReply
from reflexopt.models.cache import ResponseCache

_spec = importlib.util.spec_from_file_location("carry", ROOT / "scripts" / "carry.py")
assert _spec and _spec.loader
carry = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(carry)


def test_a_live_cache_is_carried_and_restored_with_every_answer(tmp_path: Path) -> None:
    work, repo = tmp_path / "work", tmp_path / "carry"
    home = work / "abc1234" / "home-set-reflex-400-0"
    cache = ResponseCache(home / "cache.sqlite")
    for i in range(50):
        cache.put(f"k{i}", "m", RawReply(text=f"answer {i}", prompt_tokens=3, completion_tokens=2))
    cache.flush()  # committed, still in the write-ahead log: the run is live
    assert (home / "cache.sqlite-wal").stat().st_size > 0
    saved = carry.save(work, repo, ["abc1234"])
    assert [p.name for p in saved] == ["home-set-reflex-400-0.sqlite.gz"]
    cache.close()

    other = tmp_path / "next-machine"
    done, kept = carry.restore(repo, other)
    assert done == [other / "abc1234" / "home-set-reflex-400-0"] and kept == []
    again = ResponseCache(done[0] / "cache.sqlite")
    assert [again.get(f"k{i}").text for i in (0, 49)] == ["answer 0", "answer 49"]  # type: ignore[union-attr]
    again.close()
    assert carry.restore(repo, other) == ([], [done[0]])  # a home with a cache is never overwritten
