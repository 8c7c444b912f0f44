"""Rich renderings for the CLI (tables, progress). The library never imports this."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


class _Bar:
    def __init__(self, progress: Progress | None, label: str) -> None:
        self.progress = progress
        self.task = progress.add_task(label, total=None) if progress else None
        self.scores: list[float] = []

    def set_total(self, n: int) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, total=n)

    def advance(self, result: Any) -> None:
        if result.score is not None:
            self.scores.append(result.score)
        if self.progress is not None and self.task is not None:
            mean = sum(self.scores) / len(self.scores) if self.scores else 0.0
            self.progress.update(self.task, advance=1, description=f"evaluating · mean {mean:.3f}")


@contextmanager
def progress(console: Console, label: str, *, quiet: bool = False) -> Iterator[_Bar]:
    if quiet or not console.is_terminal:
        yield _Bar(None, label)
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as p:
        yield _Bar(p, label)


def _fmt(x: float | None, nd: int = 3) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def eval_table(s: dict[str, Any], title: str = "") -> Table:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    ci = s.get("ci95")
    t.add_row("score", f"{_fmt(s['score'])}" + (f"  (95% CI {ci[0]:.3f}–{ci[1]:.3f})" if ci else ""))
    t.add_row("pass rate", _fmt(s["pass_rate"]))
    t.add_row("cases", f"{s['n_scored']} scored of {s['n_cases']}" + (f", {s['errors']} errors" if s["errors"] else ""))
    cats = s.get("failure_categories") or {}
    if cats:
        t.add_row("failure categories", ", ".join(f"{k} ({v})" for k, v in list(cats.items())[:6]))
    t.add_row("scored by", s["scorer"])
    t.add_row("tokens", f"{s['prompt_tokens']:,} prompt + {s['completion_tokens']:,} completion")
    t.add_row("cost", f"${s['cost_usd']:.4f}")
    t.add_row("latency", f"p50 {_fmt(s['latency_p50_s'], 2)} s · p95 {_fmt(s['latency_p95_s'], 2)} s")
    t.add_row("calls", f"{s['model_calls']} made · {s['cached_calls']} from cache")
    return t
