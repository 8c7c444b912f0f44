"""Run history: find runs (optimize, compare, eval, batch; finished or interrupted), show one, diff two, remove
some (`remove`, `prune`)."""

from __future__ import annotations

import difflib
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, ReflexoptError
from .eval_history import eval_page, eval_summary, finished, is_eval, load_eval
from .paths import home_dir, lock_held, write_text_atomic
from .store import RunStore, read_json, runs_root


@dataclass(frozen=True)
class RunInfo:
    id: str
    path: Path
    kind: str  # optimize | compare | eval
    started: float
    dataset: str
    model: str
    baseline: float | None  # an eval's: the score of the prompt it was checked against (several: the first's)
    best: float | None  # an eval's: its score (several prompts: the best of the others)
    significant: bool | None  # an eval's: the change against the old (or first) prompt, p < 0.05
    calls: int | None
    cost: float | None
    status: str  # done | running | failed (stopped on an error) | interrupted | unreadable (damaged files)
    cached_calls: int | None = None  # answers served from the response cache (not in `calls`, which are paid)

    def calls_text(self) -> str:
        """`437`, or `0 (+437 cached)` for a run served (partly) from the cache: the history's calls column."""
        if self.calls is None:
            return ""
        return f"{self.calls} (+{self.cached_calls} cached)" if self.cached_calls else str(self.calls)

    def to_json(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d["path"] = str(self.path)
        return d


def _running(path: Path) -> bool:
    """Whether a process owns the run now: it holds the run's lock (which goes with the process, kill -9 too).
    The pid file alone is not proof: after a crash or a reboot the pid may belong to another process. Runs
    from before the lock fall back to it."""
    held = lock_held(path / "lock")
    if held is not None:
        return held
    try:
        pid = int((path / "pid").read_text())
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False


def _run_dirs() -> list[Path]:
    roots = [runs_root(), home_dir() / "batch"]
    out: list[Path] = []
    for root in roots:
        if root.is_dir():
            out += [p.parent for p in root.glob("*/config.json")]
            out += [p.parent for p in root.glob("*/round-*/*/config.json")]
    return out


def info(path: Path) -> RunInfo:
    """One run's line in the history. A run whose files are damaged is listed as unreadable (`runs show` says
    which file and what to do), so one bad folder never hides the others."""
    try:
        return _info(path)
    except (ReflexoptError, KeyError, TypeError, AttributeError):
        return RunInfo(path.name, path, "?", _mtime(path / "config.json"), "?", "?", None, None, None, None, None,
                       "unreadable")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _info(path: Path) -> RunInfo:
    cfg = RunStore(path).config()
    started = _mtime(path / "config.json")
    if (path / "compare.json").exists() or "models" in cfg:
        res = read_json(path / "compare.json") if (path / "compare.json").exists() else None
        rows = (res or {}).get("rows", [])
        best = max((r["tuned"] for r in rows if r.get("tuned") is not None), default=None)
        return RunInfo(path.name, path, "compare", started, _data_name(cfg["data"]["path"]),
                       ", ".join(m["id"] for m in cfg["models"]), None, best, None, None, None,
                       "done" if res else "running" if _running(path) else "interrupted")
    if is_eval(path, cfg):
        return _eval_info(path, cfg, started)
    summary = RunStore(path).summary()
    status = ("done" if summary else "failed" if RunStore(path).failure() else
              "running" if _running(path) else "interrupted")
    if summary:
        return RunInfo(path.name, path, "optimize", started, _data_name(cfg["data"]["path"]), cfg["model"]["id"],
                       summary["baseline_test"], summary["best_test"], summary["significant"],
                       summary["model_calls"], summary["cost_usd"], status, summary.get("cached_calls"))
    progress = RunStore(path).progress()  # a few bytes written after each trial: no log is read
    return RunInfo(path.name, path, "optimize", started, _data_name(cfg["data"]["path"]), cfg["model"]["id"],
                   progress.get("baseline_val"), progress.get("best_val"), None, progress.get("calls"),
                   progress.get("cost_usd"), status)


def _eval_info(path: Path, cfg: dict[str, Any], started: float) -> RunInfo:
    pipe = cfg.get("pipeline")
    model = (f"{cfg['responses']!r} responses" if cfg.get("responses") else
             f"{cfg['model']['id']} · pipeline {Path(pipe['target']).name}" if pipe else cfg["model"]["id"])
    if not finished(path):
        status = "failed" if RunStore(path).failure() else "running" if _running(path) else "interrupted"
        return RunInfo(path.name, path, "eval", started, _data_name(cfg["data"]["path"]), model, None, None, None,
                       None, None, status)
    s = eval_summary(path)
    a = s.get("against") or {}
    baseline, best = a.get("old_score"), s["score"]
    if s.get("variants"):  # several prompts: the first, and the best-scoring of the rest against it
        top = max(s["variants"][1:], key=lambda r: -1.0 if r["score"] is None else r["score"])
        a, baseline, best = top["change"] or {}, s["score"], top["score"]
    return RunInfo(path.name, path, "eval", started, _data_name(cfg["data"]["path"]), model, baseline, best,
                   None if a.get("p_value") is None else a["p_value"] < 0.05, s["model_calls"], s["cost_usd"],
                   "done", s.get("cached_calls"))


def _data_name(path: str) -> str:
    """`reviews/data.jsonl`: the file and its folder, so two `data.jsonl` tell apart."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def list_runs() -> list[RunInfo]:
    return sorted((info(p) for p in _run_dirs()), key=lambda r: r.started, reverse=True)


def find(ref: str) -> Path:
    """A run by id (or unique id prefix), or by directory."""
    if Path(ref).is_dir() and (Path(ref) / "config.json").exists():
        return Path(ref)
    dirs = _run_dirs()
    exact = [p for p in dirs if p.name == ref or str(p.relative_to(home_dir())) == ref]
    hits = exact or [p for p in dirs if p.name.startswith(ref)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise ConfigError(f"no run {ref!r}", fix="see `reflexopt runs list` for run ids")
    raise ConfigError(f"{ref!r} matches {len(hits)} runs", fix="give more of the run id")


def trajectory(path: Path) -> list[dict[str, Any]]:
    """Every candidate in trial order with its state and val score."""
    cands = RunStore(path).candidates()
    return sorted(cands, key=lambda c: (c.get("trial") is not None, c.get("trial") or 0))


def show(ref: str) -> dict[str, Any]:
    path = find(ref)
    store = RunStore(path)
    out: dict[str, Any] = {"run": info(path).to_json(), "config": store.config()}
    if (path / "compare.json").exists():
        out["compare"] = read_json(path / "compare.json")
        return out
    if is_eval(path, out["config"]):
        if finished(path):
            report, name = load_eval(path)
            out["eval"] = {"name": name, "summary": report.summary()}
            out["best_prompt"] = report.prompt_text or None
        return out
    out["trajectory"] = trajectory(path)
    out["summary"] = store.summary()
    best = path / "best.md"
    out["best_prompt"] = best.read_text() if best.exists() else None
    return out


def _compared(path: Path, prompt: str | None = None) -> tuple[str, str, dict[str, Any]]:
    """What `diff` compares of a run: (its name, its prompt, its scored cases by id): an optimize run's best
    prompt and test cases, an eval's prompt and cases; of an eval of several prompts, the one named `prompt` (its
    path as given to `eval`, or its file name), by default the first."""
    if is_eval(path):
        if not finished(path):
            return "prompt", "", {}
        report = load_eval(path)[0]
        if prompt is None or not report.variant_results:
            return "prompt", report.prompt_text, {r.case_id: r for r in report.results}
        names = [name for name, _ in report.variant_results]
        name = next((n for n in names if n == prompt), None) or next(
            (n for n in names if Path(n).name == Path(prompt).name), None)
        if name is None:
            raise ConfigError(f"run {path.name} scored no prompt {prompt!r}: its prompts are {', '.join(names)}",
                              fix="pass one of them to --prompt")
        texts = dict(report.variant_texts)  # evals recorded before the texts were kept have the first's only
        text = texts.get(name, report.prompt_text if name == names[0] else "")
        return name, text, {r.case_id: r for r in dict(report.variant_results)[name]}
    store = RunStore(path)
    summary = store.summary()
    best = (path / "best.md").read_text() if (path / "best.md").exists() else ""
    return "best.md", best, store.results(summary["best_prompt"], "test") if summary else {}


def diff(a: str, b: str, prompt: str | None = None) -> dict[str, Any]:
    """Two runs' prompts (an optimize run's best, an eval's) and the cases both scored whose score differs (an
    optimize run's test cases, an eval's cases). Of an eval of several prompts, the one named `prompt` (default:
    its first); `prompt` names nothing in an optimize run."""
    pa, pb = find(a), find(b)
    (na, ba, ta), (nb, bb, tb) = _compared(pa, prompt), _compared(pb, prompt)
    prompt_diff = "".join(difflib.unified_diff(ba.splitlines(True), bb.splitlines(True), f"{pa.name}/{na}",
                                               f"{pb.name}/{nb}"))
    changes = []
    for cid in sorted(set(ta) & set(tb), key=lambda x: (len(x), x)):
        ra, rb = ta[cid], tb[cid]
        if ra.score != rb.score:
            changes.append({"case_id": cid, "input": ra.input, "ideal": ra.ideal, "score_a": ra.score,
                            "score_b": rb.score, "output_a": ra.output, "output_b": rb.output})
    better = sum(1 for c in changes if (c["score_b"] or 0) > (c["score_a"] or 0))
    return {"a": pa.name, "b": pb.name, "prompt_a": na, "prompt_b": nb, "prompt_diff": prompt_diff,
            "common_test_cases": len(set(ta) & set(tb)), "changed_cases": changes, "better_in_b": better,
            "worse_in_b": len(changes) - better}


def write_run_report(path: Path, out: Path | None = None) -> Path:
    """A run's HTML report (an optimize run's, a comparison's or an eval's), to `out` or `report.html` in its
    folder."""
    if not is_eval(path):
        from .report import write_report

        return write_report(path, out)
    target = out or path / "report.html"
    write_text_atomic(target, eval_page(path))
    return target


def _removable(path: Path) -> str | None:
    """Why the run in `path` cannot be removed (None: it can): a run of a batch belongs to the batch's folder and
    its resume state, and a running one to its process."""
    where = path.resolve()
    if where.parent != runs_root().resolve():
        batch = home_dir().resolve() / "batch"
        if batch in where.parents:
            return f"run {path.name} is part of the batch in {where.parent.parent}: remove that folder to drop it"
        return f"{path} is not in the run history ({runs_root()})"
    if _running(path):
        return f"run {path.name} is running: stop it first (Ctrl-C), or wait for it"
    return None


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def remove(refs: Sequence[str], *, dry_run: bool = False) -> list[dict[str, Any]]:
    """Remove runs from the history (`runs rm`): every ref is found and checked first, so a bad one removes
    nothing. The response cache is kept (answers already paid for stay reusable)."""
    paths = list(dict.fromkeys(find(ref) for ref in refs))
    for path in paths:
        why = _removable(path)
        if why:
            raise ConfigError(why, fix="leave it out of the list")
    return _delete(paths, dry_run=dry_run)


def prune(*, older_than_days: float | None = None, statuses: Sequence[str] = (), keep: int = 0,
          dry_run: bool = False) -> list[dict[str, Any]]:
    """Remove the runs (`runs prune`) started more than `older_than_days` ago and with one of `statuses`
    (done, failed, interrupted, unreadable), past the `keep` newest; runs of a batch and running ones are never
    touched. At least one filter is needed: pruning everything is `rm -r` of the runs folder, not a default."""
    if older_than_days is None and not statuses and not keep:
        raise ConfigError("runs prune needs --older-than, --status or --keep",
                          fix="e.g. `reflexopt runs prune --older-than 30` or `--status failed --status interrupted`")
    bad = sorted(set(statuses) - {"done", "failed", "interrupted", "unreadable"})
    if bad:
        raise ConfigError(f"no run status {', '.join(bad)}", fix="use done, failed, interrupted or unreadable")
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
    own = [r for r in list_runs() if _removable(r.path) is None]  # newest first
    picked = [r.path for r in own[keep:] if (cutoff is None or r.started < cutoff)
              and (not statuses or r.status in statuses)]
    return _delete(picked, dry_run=dry_run)


def _delete(paths: Sequence[Path], *, dry_run: bool) -> list[dict[str, Any]]:
    out = []
    for path in paths:
        out.append({"id": path.name, "path": str(path), "bytes": _size(path), "removed": not dry_run})
        if not dry_run:
            shutil.rmtree(path)
    return out


def age(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))
