"""Run storage: one directory per run, append-only logs, resume.

    <runs>/<run_id>/
      config.json      the run's configuration (no secrets)
      study.db         the Optuna study (SQLite; or --storage elsewhere)
      candidates.jsonl one line per candidate prompt (parent, operator, reasoning, params, val score, state)
      candidates/      every candidate prompt as a prompt file
      evals.jsonl      every scored case: candidate key, split, case result  (what resume replays for free)
      events.jsonl     append-only event log (phases, trials, usage)
      best.md          the selected prompt
      summary.json     the final verdict
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, InputFileError
from .paths import hold_lock, home_dir
from .paths import write_text_atomic as write_text_atomic  # the run folder's writer (its owner is paths)
from .prompt import Prompt
from .promptset import PromptSet

if TYPE_CHECKING:  # evaluate pulls in numpy and the model layer: `runs list` needs neither
    from .evaluate import CaseResult


def runs_root() -> Path:
    return home_dir() / "runs"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + os.urandom(2).hex()


def read_jsonl(path: Path, required: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """The records of an append-only log. A line cut short by a crash, and a line that is not one of the log's
    records (not JSON, not an object, a `required` key missing: damaged outside reflexopt), are skipped."""
    if not path.exists():
        return
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.endswith("\n"):
                return  # a line cut short by a crash: ignore it
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and all(k in row for k in required):
                yield row


def read_json(path: Path, *, fix: str | None = None) -> dict[str, Any]:
    """A JSON object file reflexopt wrote (a run's config, summary, a compare's results, a batch's state). One
    damaged by hand, by a full disk or by a sync is our error naming the file, never a traceback."""
    fix = fix or f"restore the file, or delete its folder {path.parent} and run again"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputFileError(path, f"cannot be read as JSON ({type(e).__name__}: {e})", fix=fix) from e
    if not isinstance(data, dict):
        raise InputFileError(path, f"holds a JSON {type(data).__name__}, not an object", fix=fix)
    return data


def hold_folder(root: Path, what: str) -> Any:
    """Hold `root`'s lock while `what` runs there (released with the process), so `runs list` can tell a running
    compare or batch from an interrupted one; another process is refused."""
    return hold_lock(root / "lock", f"{what} is running in another process", fix="wait for it")


def prompt_key(prompt: str | Prompt | PromptSet) -> str:
    """The key a candidate's evals are stored under (`PromptSet.key`; a prompt file's is its `Prompt.key`), from
    the prompt(s) or their stored text."""
    if isinstance(prompt, (Prompt, PromptSet)):
        return prompt.key
    return PromptSet.parse(prompt, "<stored prompt>").key


class RunStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.candidates_dir = root / "candidates"
        self._baseline_val: float | None = None  # from the run's `baseline` event, for progress.json

    @property
    def run_id(self) -> str:
        return self.root.name

    @classmethod
    def create(cls, config: dict[str, Any], *, run_dir: Path | None = None, run_id: str | None = None,
               baseline: str | None = None) -> RunStore:
        """A new run folder. `config.json` is written last and atomically: a folder that has it is a complete
        run that can be resumed, whenever the process was killed."""
        root = run_dir or runs_root() / (run_id or new_run_id())
        if (root / "config.json").exists():
            raise ConfigError(f"{root} already holds a run", fix="use --resume to continue it, or another --run-dir")
        root.mkdir(parents=True, exist_ok=True)
        (root / "candidates").mkdir(exist_ok=True)
        if baseline is not None:
            write_text_atomic(root / "candidates" / "baseline.md", baseline)
        # unique per run, not just per directory name: two runs with `--run-dir x/run` on one shared storage must
        # not meet in one study (the second would silently continue the first one's search)
        write_text_atomic(root / "study_name", f"reflexopt-{root.name}-{os.urandom(4).hex()}")
        write_text_atomic(root / "config.json", json.dumps(config, indent=2, sort_keys=True))
        store = cls(root)
        store.claim()
        return store

    def claim(self) -> None:
        """Make this process the run's owner, or raise when another process runs it: two processes on one run
        would each spend the whole --max-calls on it. The lock goes with `release()`, or with the process however
        it ends (kill -9 too). Records the pid, so `runs list` can tell running from interrupted runs; a failed
        run that is resumed is no longer failed."""
        try:
            pid = f" (pid {int((self.root / 'pid').read_text())})"
        except (OSError, ValueError):
            pid = ""
        lock = hold_lock(self.root / "lock", f"run {self.run_id} is running in another process{pid}",
                         fix="wait for it to finish, or stop it and resume then; to put more processes on one "
                             "run, start it with --storage and add `reflexopt worker`s")
        self._lock = lock
        (self.root / "pid").write_text(str(os.getpid()), encoding="utf-8")
        (self.root / "failed.json").unlink(missing_ok=True)

    def release(self) -> None:
        lock = self.__dict__.pop("_lock", None)
        if lock is not None:
            lock.release()

    def mark_failed(self, message: str) -> None:
        """Record why the run stopped on an error (not an interruption): `runs list` shows it as failed."""
        write_text_atomic(self.root / "failed.json", json.dumps({"error": message}))
        self.event("failed", error=message)

    def failure(self) -> str | None:
        try:
            return str(json.loads((self.root / "failed.json").read_text(encoding="utf-8"))["error"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @classmethod
    def open(cls, ref: str | None = None, *, run_dir: Path | None = None) -> RunStore:
        """An existing run: by directory, by id under the runs root, or the latest one."""
        if run_dir is not None and ref is None:
            root = run_dir
        elif ref and Path(ref).is_dir():
            root = Path(ref)
        elif ref:
            root = (run_dir.parent if run_dir else runs_root()) / ref
        else:
            runs = sorted((p for p in runs_root().glob("*") if (p / "config.json").exists()
                           and not p.name.startswith(("compare-", "eval-"))),  # not optimize runs
                          key=lambda p: p.stat().st_mtime)
            if not runs:
                raise ConfigError("no run to resume", fix="start one with reflexopt optimize")
            root = runs[-1]
        if not (root / "config.json").exists():
            raise ConfigError(f"{root}: not a reflexopt run directory", fix="pass a run id from `reflexopt runs list`")
        return cls(root)

    def save_config(self, config: dict[str, Any]) -> None:
        """Replace config.json (atomically) with a resume's changed settings."""
        write_text_atomic(self.root / "config.json", json.dumps(config, indent=2, sort_keys=True))

    def config(self) -> dict[str, Any]:
        return read_json(self.root / "config.json")

    def study_name(self) -> str:
        """The run's Optuna study (runs made before the name was stored used the directory name alone)."""
        try:
            return (self.root / "study_name").read_text(encoding="utf-8").strip()
        except OSError:
            return f"reflexopt-{self.run_id}"

    def storage_url(self) -> str:
        return f"sqlite:///{(self.root / 'study.db').resolve()}"

    def _append(self, name: str, obj: dict[str, Any]) -> None:
        with (self.root / name).open("a", encoding="utf-8") as f:
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")

    def event(self, kind: str, **data: Any) -> None:
        self._append("events.jsonl", {"t": round(time.time(), 3), "event": kind, **data})

    LOGGED = frozenset({"start", "baseline", "judge_noise", "judge_known", "stale_trials_failed", "diagnosis",
                        "proposal", "reasoner_given_up", "draws_stopped", "trial", "stop", "done"})

    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        """The run store as an event subscriber: the run's events as they were emitted (one vocabulary) go to
        events.jsonl, and `baseline` and `trial` update the progress snapshot `runs list` reads."""
        if kind == "candidate":
            self.save_candidate(data["record"], data["markdown"])
            return
        if kind not in self.LOGGED:
            return
        self.event(kind, **data)
        if kind == "baseline":
            self._baseline_val = float(data["val"])
        if kind in ("baseline", "trial"):
            usage = data.get("usage") or {}
            base = (self._baseline_val if self._baseline_val is not None
                    else float(data.get("best_val", data.get("val", 0.0))))
            self.write_progress(calls=int(usage.get("budget_calls_used", 0)),
                                cost_usd=float(usage.get("cost_usd", 0.0)), trials=int(data.get("n", 0)),
                                baseline_val=base, best_val=float(data.get("best_val", data.get("val", base))))

    def events(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.root / "events.jsonl", ("event",)))

    def add_eval(self, key: str, split: str, result: CaseResult, calls: int) -> None:
        self._append("evals.jsonl", {"key": key, "split": split, "calls": calls, **result.to_json()})

    def evals(self) -> dict[tuple[str, str, str], tuple[CaseResult, int]]:
        from .evaluate import CaseResult

        out: dict[tuple[str, str, str], tuple[CaseResult, int]] = {}
        for row in read_jsonl(self.root / "evals.jsonl", ("key", "split", "case_id")):
            try:
                out[(row["key"], row["split"], row["case_id"])] = (CaseResult.from_json(row), int(row.get("calls", 0)))
            except (TypeError, ValueError):
                continue
        return out

    def results(self, prompt: str | Prompt | PromptSet, split: str = "test",
                evals: dict[tuple[str, str, str], tuple[CaseResult, int]] | None = None) -> dict[str, CaseResult]:
        """The recorded results of one prompt on one split, by case id (the only place that looks them up)."""
        key = prompt_key(prompt)
        return {cid: r for (k, s, cid), (r, _) in (evals if evals is not None else self.evals()).items()
                if k == key and s == split}

    def save_candidate(self, record: dict[str, Any], markdown: str) -> None:
        write_text_atomic(self.candidates_dir / f"{record['id']}.md", markdown)
        self._append("candidates.jsonl", record)

    def candidates(self) -> list[dict[str, Any]]:
        """Latest record per candidate id."""
        latest: dict[str, dict[str, Any]] = {}
        for row in read_jsonl(self.root / "candidates.jsonl", ("id", "key", "operator", "state")):
            latest[str(row["id"])] = row
        return list(latest.values())

    def candidate_markdown(self, cid: str) -> str | None:
        p = self.candidates_dir / f"{cid}.md"
        return p.read_text(encoding="utf-8") if p.exists() else None

    def baseline_markdown(self, *, from_file: bool = True) -> str:
        """The starting prompt as saved, or re-read from its file when a kill came before it was saved (with
        `from_file=False`, "" then: the live view reads nothing outside the run directory)."""
        md = self.candidate_markdown("baseline")
        if md is not None:
            return md
        if not from_file:
            return ""
        path = str(self.config().get("prompt_path") or "")
        try:
            return Path(path).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError):
            raise ConfigError(f"{self.root}: the starting prompt was never saved and {path or 'its file'} cannot be "
                              "read", fix="start the run again with another --run-dir") from None

    def write_best(self, markdown: str) -> Path:
        path = self.root / "best.md"
        write_text_atomic(path, markdown)
        return path

    def write_progress(self, *, calls: int, cost_usd: float, trials: int, baseline_val: float,
                       best_val: float) -> None:
        """A small snapshot (calls, cost, baseline and best val) so `runs list` never reads the logs."""
        progress = {"calls": calls, "cost_usd": cost_usd, "trials": trials, "baseline_val": round(baseline_val, 4),
                    "best_val": round(best_val, 4)}
        write_text_atomic(self.root / "progress.json", json.dumps(progress))

    def progress(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / "progress.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_text_atomic(self.root / "summary.json", json.dumps(summary, indent=2))

    def summary(self) -> dict[str, Any] | None:
        p = self.root / "summary.json"
        # the verdict is made again from the stored results, without a model call
        fix = f"restore it, or delete it and run `reflexopt optimize --resume {self.run_id}`"
        return read_json(p, fix=fix) if p.exists() else None
