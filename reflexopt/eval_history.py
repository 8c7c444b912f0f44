"""Where an `eval` run is kept: its folder in the run history (`runs/eval-ID/`), which `runs list`, `runs show`,
`report` and `serve` read, and with `--track`, its run in each tracker.

The folder gets the settings (`config.json`, with `kind: eval`) when the eval starts and is held while it runs,
so `runs list` tells a running eval from an interrupted one; an eval stopped by an error records it
(`failed.json`), except for bad input (a dataset, prompt or option error, found before any call), which leaves
no folder. When it ends: the scored cases of each prompt (`cases.jsonl`, with `--against` also
`against_cases.jsonl`, with several prompts also `variant_cases.jsonl`: every prompt's, each line naming its
prompt) and the rest of the report (`eval.json`, written last: a folder that has it holds a finished
eval). An eval pays nothing to run again (its answers are in the response cache), so there is no resume.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from .config import EvalConfig, public
from .errors import ConfigError, InputFileError, ReflexoptError
from .evaluate import CaseResult, EvalReport
from .store import RunStore, hold_folder, new_run_id, read_json, read_jsonl, runs_root, write_text_atomic

EVAL_FILE = "eval.json"
VARIANT_FILE = "variant_cases.jsonl"  # with several prompts: every prompt's cases, each line naming its prompt
PREFIX = "eval-"  # an eval's folder name: PREFIX + a run id


def eval_name(config: EvalConfig) -> str:
    """What an eval ran on, in a few words: `prompt.md on data.jsonl` (`a.md and 2 more prompts on ...`)."""
    n = len(config.variants)
    more = f" and {n} more prompt{'s' if n > 1 else ''}" if n else ""
    what = (Path(config.prompt_path).name + more if config.prompt_path
            else Path(config.pipeline.target).name if config.pipeline  # app.py:run
            else f"{config.responses!r} responses")
    return f"{what} on {Path(config.data.path).name}"


async def recorded(config: EvalConfig, run: Callable[[], Awaitable[EvalReport]], *,
                   on_note: Callable[[str], None]) -> EvalReport:
    """`run()` in the eval's folder (see the module's note), and with `--track`, logged to each tracker (checked
    before any model call; a tracker that fails is detached with a note, and the report is the same). The
    report carries its folder (`run_dir`)."""
    folder = runs_root() / (PREFIX + new_run_id())
    folder.mkdir(parents=True)
    lock = hold_folder(folder, f"eval {folder.name}")
    try:
        write_text_atomic(folder / "config.json", json.dumps({"kind": "eval", **public(config.model_dump(
            mode="json"))}, indent=2, sort_keys=True))
        try:
            report = await _tracked(config, run, on_note)
        except (InputFileError, ConfigError):  # bad input, found before any call: nothing to keep
            shutil.rmtree(folder, ignore_errors=True)
            raise
        except ReflexoptError as e:
            RunStore(folder).mark_failed(str(e))
            raise
        report = replace(report, run_dir=str(folder))
        save_eval(folder, report, eval_name(config))
        return report
    finally:
        lock.release()


async def _tracked(config: EvalConfig, run: Callable[[], Awaitable[EvalReport]],
                   on_note: Callable[[str], None]) -> EvalReport:
    if not config.track.trackers:
        return await run()
    from .events import TrackedBus

    bus = TrackedBus([lambda kind, data: on_note(data["message"]) if kind == "note" else None], config.track)
    ok = False
    try:
        report = await run()
        bus("eval_done", _tracker_record(config, report))
        ok = True
        return report
    finally:
        bus.finish(ok)


def _tracker_record(config: EvalConfig, report: EvalReport) -> dict[str, Any]:
    """What a tracker logs of an eval run: its name, settings, summary, scored cases (with several prompts, every
    prompt's, each naming its prompt) and the prompts' text (the first as prompt.md, the next as prompt-2.md, ...,
    in the order of the summary's `variants`)."""
    prompts = {"prompt.md": report.prompt_text,
               **{f"prompt-{i}.md": text for i, (_, text) in enumerate(report.variant_texts[1:], start=2)},
               **({"against.md": report.against_text} if report.against_text is not None else {})}
    return {"name": f"eval {eval_name(config)}", "summary": report.summary(),
            "config": config.model_dump(mode="json"), "cases": report.case_rows(), "prompts": prompts}


def save_eval(folder: Path, report: EvalReport, name: str) -> None:
    """An eval's report in its folder (see the module's note)."""
    for file, results in (("cases.jsonl", report.results), ("against_cases.jsonl", report.against_results)):
        if results:
            write_text_atomic(folder / file, "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n"
                                                     for r in results))
    if report.variant_results:  # what `eval -o` writes with several prompts: each line names its prompt
        report.write_jsonl(folder / VARIANT_FILE)
    record = {f.name: getattr(report, f.name) for f in fields(report)
              if f.name not in ("results", "against_results", "variant_results")}
    # the summary too: the run list reads it on every request of the view, without the cases
    write_text_atomic(folder / EVAL_FILE, json.dumps({"name": name, "summary": report.summary(), "report": record},
                                                     indent=2, ensure_ascii=False))


def finished(folder: Path) -> bool:
    """The eval in this folder ended and wrote its report."""
    return (folder / EVAL_FILE).exists()


def is_eval(folder: Path, config: dict[str, Any] | None = None) -> bool:
    """The run folder holds an eval (finished, or with only its settings: running, interrupted or failed), by its
    settings (`config`, when the caller has read them)."""
    if finished(folder):
        return True
    if config is None:
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
    return isinstance(config, dict) and config.get("kind") == "eval"


def eval_summary(folder: Path) -> dict[str, Any]:
    """A finished eval's summary (`EvalReport.summary`), read without its cases."""
    summary = read_json(folder / EVAL_FILE).get("summary")
    if not isinstance(summary, dict):
        raise InputFileError(folder / EVAL_FILE, "has no summary", fix=f"restore it, or delete its folder {folder}")
    return summary


def load_eval(folder: Path) -> tuple[EvalReport, str]:
    """An eval's report and name, as `save_eval` wrote them. A damaged file is an InputFileError naming it."""
    data = read_json(folder / EVAL_FILE)
    try:
        cases = {file: tuple(CaseResult.from_json(row) for row in read_jsonl(folder / file, ("case_id", "score")))
                 for file in ("cases.jsonl", "against_cases.jsonl")}
        by_prompt: dict[str, list[CaseResult]] = {}
        for row in read_jsonl(folder / VARIANT_FILE, ("prompt", "case_id", "score")):
            by_prompt.setdefault(str(row.pop("prompt")), []).append(CaseResult.from_json(row))
        record = dict(data["report"])
        texts = tuple((str(name), str(text)) for name, text in record.pop("variant_texts", ()))  # a list in JSON
        return (EvalReport(results=cases["cases.jsonl"], against_results=cases["against_cases.jsonl"],
                           variant_results=tuple((k, tuple(v)) for k, v in by_prompt.items()), variant_texts=texts,
                           **record), str(data["name"]))
    except (KeyError, TypeError, ValueError) as e:
        raise InputFileError(folder / EVAL_FILE, f"is not an eval's report ({type(e).__name__}: {e})",
                             fix=f"restore it, or delete its folder {folder}") from e


def eval_page(folder: Path, *, nav: str = "") -> str:
    """The HTML page of an eval in the run history."""
    from .report import eval_report

    report, name = load_eval(folder)
    return eval_report(report, title=f"reflexopt eval: {name}", nav=nav)
