"""Carry benchmark response caches from one machine to the next: a judged run here can take longer than a session,
and a session's /tmp does not outlive its machine. Only committed files do.

    python scripts/carry.py save 09317ef 605c890        # WORK/<version>/home-*/cache.sqlite -> CARRY/<version>/
    python scripts/carry.py restore                      # CARRY/<version>/*.sqlite.gz -> WORK/<version>/home-*/

`save` copies each home's response cache under the versions named (a consistent copy of the live database, its
write-ahead log included), gzipped, to CARRY/<version>/<home>.sqlite.gz. `restore` puts each one back as that home's
cache.sqlite, unless the home already has a cache. A run restarted on a restored cache is the run a cold cache
gives: a cached answer is the answer the same request got, and it counts against `--max-calls` as the call it
replaces; the row says how many answers it reused (`reused_calls`). Delete a version's carried caches once its
rows are committed. WORK defaults to bench.py's `--work`, CARRY to scripts/results/carry.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = "cache.sqlite"


def save(work: Path, carry: Path, versions: list[str]) -> list[Path]:
    out = []
    for version in versions:
        homes = sorted(p for p in (work / version).glob("home-*") if (p / CACHE).exists())
        if not homes:
            raise SystemExit(f"{work / version}: no home with a {CACHE}; name a folder that bench.py made there")
        (carry / version).mkdir(parents=True, exist_ok=True)
        for home in homes:
            with tempfile.TemporaryDirectory() as tmp:
                copy = Path(tmp) / CACHE
                src, dst = sqlite3.connect(home / CACHE), sqlite3.connect(copy)
                with dst:
                    src.backup(dst)  # the committed state, WAL included, while a run may still be writing
                src.close()
                dst.close()
                target = carry / version / f"{home.name}.sqlite.gz"
                with copy.open("rb") as f, gzip.open(target, "wb", compresslevel=9) as g:
                    shutil.copyfileobj(f, g)
            out.append(target)
    return out


def restore(carry: Path, work: Path) -> tuple[list[Path], list[Path]]:
    done, kept = [], []
    for gz in sorted(carry.glob("*/home-*.sqlite.gz")):
        home = work / gz.parent.name / gz.name.removesuffix(".sqlite.gz")
        if (home / CACHE).exists():
            kept.append(home)
            continue
        home.mkdir(parents=True, exist_ok=True)
        with gzip.open(gz, "rb") as g, (home / CACHE).open("wb") as f:
            shutil.copyfileobj(g, f)
        done.append(home)
    return done, kept


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["save", "restore"])
    ap.add_argument("versions", nargs="*", help="save: the version folders under WORK (bench.py names them by commit)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "reflexopt-bench")
    ap.add_argument("--carry", type=Path, default=ROOT / "scripts" / "results" / "carry")
    a = ap.parse_args()
    if a.action == "save":
        if not a.versions:
            ap.error("save needs the version folders to carry, e.g. 09317ef")
        for p in save(a.work, a.carry, a.versions):
            print(f"saved {p.relative_to(a.carry)} ({p.stat().st_size // 1024} KiB)")
        return 0
    done, kept = restore(a.carry, a.work)
    for home in done:
        print(f"restored {home}")
    for home in kept:
        print(f"kept {home}: it already has a cache", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
