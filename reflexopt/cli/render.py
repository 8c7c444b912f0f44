"""Rich renderings for the CLI (tables, progress). The library never imports this."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..agreement import known_summary, second_opinion_text
from ..evaluate import CACHED_LATENCY
from ..textsafe import printable, printable_data


class _Bar:
    def __init__(self, progress: Progress | None, label: str) -> None:
        self.progress = progress
        self.task = progress.add_task(label, total=None) if progress else None
        self.label = label
        self.scores: list[float] = []

    def set_total(self, n: int) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, total=n)

    def advance(self, result: Any) -> None:
        if result.score is not None:
            self.scores.append(result.score)
        if self.progress is not None and self.task is not None:
            mean = sum(self.scores) / len(self.scores) if self.scores else 0.0
            self.progress.update(self.task, advance=1, description=f"{self.label} · mean {mean:.3f}")


@contextmanager
def progress(console: Console, label: str, *, quiet: bool = False) -> Iterator[_Bar]:
    if quiet or not console.is_terminal:
        yield _Bar(None, label)
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as p:
        yield _Bar(p, label)


def case_line(d: dict[str, Any]) -> str:
    """One scored case for --verbose: where, which case, score and the start of the output."""
    score = "error" if d.get("score") is None else f"{d['score']:.2f}"
    where = f"{d.get('candidate', '')} {d.get('split', '')} ".lstrip()
    out = printable(" ".join(str(d.get("output", "")).split())[:100])
    return f"{where}case {d.get('case_id', '?')} · {score} · {out}"


def _fmt(x: float | None, nd: int = 3) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def eval_table(s: dict[str, Any], title: str = "") -> Table:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    ci = s.get("ci95")
    t.add_row("score", f"{_fmt(s['score'])}" + (f"  (95% CI {ci[0]:.3f}–{ci[1]:.3f})" if ci else ""))
    t.add_row("pass rate", _fmt(s["pass_rate"]))
    if s.get("labels"):
        t.add_row("macro-F1", labels_text(s["labels"]))
    const = s.get("constant")
    if const:
        from ..evaluate import constant_text

        below = s["score"] is not None and s["score"] <= const["score"]
        t.add_row("constant answer", constant_text(const) + (": [yellow]this prompt is not above it[/]" if below
                                                             else _gap_markup(const, "this prompt")))
    if s.get("echo"):
        t.add_row("copies of the input", echo_line(s["echo"]))
    failed = s.get("task_failures") or 0
    t.add_row("cases", f"{s['n_scored']} of {s['n_cases']} in the score"
              + (f" ({failed} task failure{'s' if failed > 1 else ''} counted as 0)" if failed else "")
              + (f", {s['errors']} errors" if s["errors"] else ""))
    cats = s.get("failure_categories") or {}
    if cats:
        t.add_row("failure categories", ", ".join(f"{k} ({v})" for k, v in list(cats.items())[:6]))
    t.add_row("scored by", s["scorer"])
    t.add_row("tokens", f"{s['prompt_tokens']:,} prompt + {s['completion_tokens']:,} completion"
              + (" paid in this run" if s.get("cached_calls") else ""))
    t.add_row("cost", f"${s['cost_usd']:.4f} paid in this run")
    m = s.get("money")
    if m:
        retries = sum(int(v.get("retries", 0)) for v in (s.get("by_role") or {}).values())
        t.add_row("cost per success", money_text(m) + (f" · {retries} retries" if retries else ""))
    if s.get("latency_p50_s") is not None:
        t.add_row("latency", f"p50 {_fmt(s['latency_p50_s'], 2)} s · p95 {_fmt(s['latency_p95_s'], 2)} s"
                  + (f" ({CACHED_LATENCY})" if s.get("latency_from_cache") else ""))
    t.add_row("calls", f"{s['model_calls']} made · {s['cached_calls']} from cache")
    if s.get("judge"):
        t.add_row("judge", judge_text(s["judge"]))
        if (s["judge"].get("known") or {}).get("warning"):
            t.add_row("[yellow]warning[/]", f"[yellow]{s['judge']['known']['warning']}[/]")
    h = s.get("human_agreement")
    if h:
        rho = "–" if h["spearman"] is None else f"{h['spearman']:.3f}"
        kappa = "–" if h["kappa"] is None else f"{h['kappa']:.3f}"
        rates = (f" · pass rate judge {h['judge_pass_rate']:.0%}, people {h['human_pass_rate']:.0%}"
                 if h.get("human_pass_rate") is not None and h.get("judge_pass_rate") is not None else "")
        t.add_row("agreement with people", f"Spearman's rho {rho} · Cohen's kappa {kappa} (pass/fail) · "
                  f"{h['n']} cases labelled in {h['column']!r}{rates}" + (f" · {h['note']}" if h.get("note") else ""))
    if s.get("run_dir"):
        name = s["run_dir"].replace("\\", "/").rsplit("/", 1)[-1]
        t.add_row("run", f"{name} (in reflexopt runs list, serve and report)")
    return t


def labels_text(lab: dict[str, Any]) -> str:
    """`0.412 (F1 anger 0.61, joy 0.40, ...; balanced accuracy 0.45; 3 answers name no label)`."""
    by = ", ".join(f"{k} {v:.2f}" for k, v in list(lab["f1_by_label"].items())[:8])
    none = f"; balanced accuracy {lab['balanced_accuracy']:.2f}" if lab.get("balanced_accuracy") is not None else ""
    none += f"; {lab['no_label']} answers name no label" if lab.get("no_label") else ""
    if lab.get("collapsed"):
        from ..metrics import collapsed_text

        none += f"; [yellow]{collapsed_text(lab['collapsed'])}[/]"
    return f"{lab['macro_f1']:.3f} (F1 {by}{none})"


def echo_line(e: dict[str, Any]) -> str:
    """agreement.echo_text, with a warning when the scorer passed such answers (a judge grading the meaning of an
    answer, not the change the task asks for)."""
    from ..agreement import echo_text

    if not e["passed"]:
        return echo_text(e)
    return (f"[yellow]{echo_text(e)}: the scorer passes a copy of the input, so a prompt that makes the model repeat "
            "it scores without doing the task. State in the rubric what the answer must change (--judge-criteria "
            "FILE).[/]")


def money_text(m: dict[str, Any]) -> str:
    """`$0.0123 per successful task (41 of 60 passing) · $0.0084 per 1,000 requests · price: litellm price map`."""
    if m.get("cost_per_1k") is None:
        return f"– (price unknown: -m ID@price_in=,price_out= or --prices FILE; {m.get('price_source', '')})"
    per = "– (no case passed)" if m.get("cost_per_success") is None else f"${m['cost_per_success']:.6f}"
    return (f"{per} per successful task ({m['passing']} of {m['requests']} passing) · ${m['cost_per_1k']:.4f} per "
            f"1,000 requests · price: {m.get('price_source', '')}")


def disagreement_table(h: dict[str, Any]) -> Table:
    """The cases where the judge and the people who labelled them are furthest apart."""
    t = Table(title="where the judge and people disagree most", title_justify="left")
    for col in ("case", "line", "judge", "human", "response graded", "judge's reasoning"):
        t.add_column(col, overflow="fold")
    for d in h["disagreements"]:
        human = f"{d['human']:g}" if isinstance(d["human"], float) else ("pass" if d["human"] else "fail")
        t.add_row(str(d["case_id"]), str(d["line"]), f"{d['judge']:g}", human,
                  printable(str(d.get("output", ""))[:120]), printable(d["reasoning"]))
    return t


def cache_mark(r: dict[str, Any]) -> str:
    """‡ after a latency read from the cache (CACHED_LATENCY)."""
    return "‡" if r.get("latency_from_cache") else ""


def p95_text(r: dict[str, Any]) -> str:
    """A row's p95 latency, marked as cache_mark says."""
    return "–" if r.get("latency_p95_s") is None else f"{r['latency_p95_s']:.2f} s{cache_mark(r)}"


def cached_latency_note(rows: list[dict[str, Any]]) -> str:
    return f"‡ {CACHED_LATENCY}" if any(r.get("latency_from_cache") for r in rows) else ""


def matrix_table(rows: list[dict[str, Any]], title: str = "") -> Table:
    """`eval ... -m A -m B`: a row per prompt, a column per model; each cell the score (bold: the best prompt on
    that model), pass rate, cost per success and p95 latency."""
    from rich.markup import escape

    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    prompts = list(dict.fromkeys(str(r["prompt"]) for r in rows))
    at = {(str(r["model"]), str(r["prompt"])): r for r in rows}
    t = Table(title=title or None, title_justify="left")
    t.add_column("prompt")
    for m in models:
        t.add_column(escape(printable(m)) + "\nscore · pass · $/success · p95", justify="right")

    def cell(r: dict[str, Any] | None) -> str:
        if r is None:
            return "–"
        score = _fmt(r["score"])
        return (f"{'[bold]' + score + '[/]' if r['best_on_model'] else score} · {_fmt(r['pass_rate'])} · "
                + ("–" if r["cost_per_success"] is None else f"${r['cost_per_success']:.6f}") + " · " + p95_text(r))

    for p in prompts:
        t.add_row(escape(printable(p)), *(cell(at.get((m, p))) for m in models))
    t.caption = cached_latency_note(rows) or None
    return t


def variants_table(rows: list[dict[str, Any]]) -> Table:
    """Several prompts on the same cases: each one's score and costs, and each after the first against it."""
    from ..verdict import p_text

    t = Table(title=f"{len(rows)} prompts on the same cases, each against the first (p Holm-adjusted)",
              title_justify="left")
    for col in ("prompt", "score (95% CI)", "pass rate", "change against the first", "verdict", "prompt tokens",
                "cost per success", "p95"):
        t.add_column(col, justify="left" if col in ("prompt", "verdict") else "right")
    for r in rows:
        ci = r["ci95"]
        c = r["change"]
        if c is None:
            change, verdict = "(the first)", ""
        elif c["ci95"] is None:
            change, verdict = "– (no case scored for both)", ""
        else:
            change = f"{c['delta']:+.3f} ({c['ci95'][0]:+.3f} to {c['ci95'][1]:+.3f}), {p_text(c['p_value'])}"
            verdict = f"[{ {'worse': 'red', 'better': 'green'}.get(c['verdict'], 'yellow') }]{c['verdict']}[/]"
        t.add_row(printable(str(r["prompt"])), _fmt(r["score"]) + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else ""),
                  _fmt(r["pass_rate"]), change, verdict, _fmt(r["prompt_tokens_per_case"], 1),
                  "–" if r["cost_per_success"] is None else f"${r['cost_per_success']:.6f}", p95_text(r))
    t.caption = cached_latency_note(rows) or None
    return t


def against_table(a: dict[str, Any], new: str = "") -> Table:
    """`eval --against`: the prompt evaluated against the one it replaces, and the cases that got worse."""
    from ..verdict import p_text

    colour = {"worse": "red", "better": "green"}.get(a["verdict"], "yellow")
    t = Table(title=f"{new or 'this prompt'} against {a['prompt']}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    if a["ci95"] is None:
        t.add_row("change", "– (no case scored for both prompts)")
        return t
    t.add_row("verdict", f"[{colour}]{a['verdict']}[/]")
    t.add_row("score", f"{a['old_score']:.3f} -> {a['new_score']:.3f}, change {a['delta']:+.3f} (95% CI "
              f"{a['ci95'][0]:+.3f} to {a['ci95'][1]:+.3f}, {p_text(a['p_value'])}, {a['test']})")
    t.add_row("cases", f"{a['better_cases']} better · {a['worse_cases']} worse · {a['paired']} of {a['n']} compared")
    tok = a["prompt_tokens_per_case"]
    if tok["old"] is not None and tok["new"] is not None:
        t.add_row("prompt tokens", f"{tok['old']:g} -> {tok['new']:g} per case")
    ref = a.get("reference")
    if ref:
        from ..verdict import reference_text

        said = reference_text(ref, (a["old_score"], a["new_score"]))
        t.add_row("references", f"[yellow]{said}[/]" if ref["disagrees"] else said)
    for i, w in enumerate(a["worst"], 1):
        t.add_row(f"worse {i}", printable(f"case {w['case_id']}: {_fmt(w['old_score'], 2)} -> {_fmt(w['new_score'], 2)}"
                                          f" · input {str(w['input'])[:80]!r} · was {str(w['old_output'])[:80]!r}"
                                          f" · now {str(w['new_output'])[:80]!r}"))
    return t


class LiveView:
    """Renders optimizer events on stderr: phase, trial, best val, calls, tokens, cost, elapsed, time left."""

    def __init__(self, console: Console, *, quiet: bool = False, verbose: bool = False) -> None:
        import time

        from rich.live import Live

        self.console = console
        self.quiet = quiet
        self.verbose = verbose and not quiet
        self.start = time.monotonic()
        self.state: dict[str, Any] = {"phase": "starting", "trial": 0, "best_val": None, "baseline_val": None,
                                      "cases": 0}
        self.est: dict[str, Any] = {}
        self.usage: dict[str, Any] = {}
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=True) \
            if console.is_terminal and not quiet else None

    def __enter__(self) -> LiveView:
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live:
            self.live.__exit__(*exc)

    def _render(self) -> Table:
        import time

        s = self.state
        elapsed = time.monotonic() - self.start
        t = Table(show_header=False, box=None)
        t.add_column(style="bold cyan")
        t.add_column()
        t.add_row("phase", str(s["phase"]))
        cap = self.est.get("max_trials")
        cap_text = "?" if cap is None else ("budget" if cap >= 10_000 else str(cap))
        t.add_row("trial", f"{s['trial']} / {cap_text}  {s.get('last', '')}")
        t.add_row("val", f"baseline {_fmt(s['baseline_val'])} · best {_fmt(s['best_val'])}")
        u = self.usage
        calls = u.get("model_calls", 0)  # the same count the summary shows
        t.add_row("calls", f"{calls} paid · {u.get('cached_calls', 0)} cached · "
                  f"est. {self.est.get('calls_estimate', '?')}")
        t.add_row("tokens", f"{u.get('prompt_tokens', 0):,} + {u.get('completion_tokens', 0):,}  "
                  f"cost ${u.get('cost_usd', 0):.4f}")
        left = ""
        est = self.est.get("calls_estimate")
        if est and calls >= 20:  # an upper bound: the search may stop earlier (patience, target)
            left = f" · at most about {max(0.0, elapsed / calls * (est - calls)) / 60:.0f} min left"
        t.add_row("elapsed", f"{elapsed / 60:.1f} min{left}")
        return t

    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        s = self.state
        if kind == "start":
            self.est = data
            self.est.setdefault("max_trials", data.get("max_trials"))
            msg = "resuming" if data.get("resumed") else "run"
            self.console.print(f"[dim]{msg} {data['run_id']} in {data['run_dir']} · train/val/test "
                               f"{data['n_train']}/{data['n_val']}/{data['n_test']} · "
                               + (f"val/test balanced: {b['val_per_label']}/{b['test_per_label']} per label · "
                                  if (b := data.get("balanced")) else "") +
                               f"estimated about {data['calls_estimate']} calls{self._cost(data)}[/]")
            m = data.get("models")
            if m:
                self.console.print(f"[dim]task {m['task']} · reasoning {m['reasoning']} · scored by {m['scorer']}[/]",
                                   highlight=False)
        elif kind == "case" and self.verbose:
            self.console.print(case_line(data), highlight=False, markup=False)
        elif kind == "note":
            self.console.print(f"[dim]{data['message']}[/]")
        elif kind == "phase":
            s["phase"] = data["phase"]
        elif kind == "judge_noise":
            self.console.print(f"[dim]{data.get('text') or ''}[/]", highlight=False)
        elif kind == "judge_known":
            self.console.print(f"[dim]{data['text']}[/]", highlight=False)
            if data["warning"]:
                self.console.print(f"[yellow]{data['warning']}[/]", highlight=False)
        elif kind == "baseline":
            s["baseline_val"] = s["best_val"] = data["val"]
            if data.get("noise"):
                self.console.print("[dim]a gain on val is accepted when it is more than twice the standard error "
                                   "of the per-case differences (this judge's verdicts are noisy)[/]")
        elif kind == "trial_start":
            s["trial"] = max(int(s.get("trial") or 0), int(data["n"]))  # trial numbers only go up
            s["last"] = f"({data['operator']} from {data['parent']})"
        elif kind == "trial":
            s["best_val"] = data["best_val"]
            self.usage = data["usage"]
            if self.live is None and not self.quiet:
                mark = "✓ accepted" if data["accepted"] else data["state"]
                if data.get("pruned_by") == "gate":
                    mark = f"pruned: no gain over {data.get('parent') or 'its parent'}"
                elif data.get("pruned_by") == "worse than best":
                    mark = "pruned: significantly worse than the best"
                elif data.get("duplicate_of"):
                    mark = f"duplicate of {data['duplicate_of']} (scores reused, no calls)"
                if data.get("collapsed"):
                    from ..metrics import collapsed_text

                    mark += " · " + collapsed_text(data["collapsed"])
                op = data["operator"] + (f" → {data['target']}" if data.get("target") else "")
                self.console.print(f"trial {data['n']:>3} {op:<24} val {_fmt(data['val'])} "
                                   f"({data['n_val']} cases) {mark} · best {_fmt(data['best_val'])}")
        elif kind == "done":
            self.usage = data["usage"]
        if self.live:
            self.live.update(self._render())

    @staticmethod
    def _cost(d: dict[str, Any]) -> str:
        c = d.get("cost_estimate_usd")
        return f", about ${c:.2f}" if c else ""


def constant_line(const: dict[str, Any], *, below: bool, skewed: bool, best_test: float | None = None) -> str:
    """The summary's "constant answer" row: what answering the most common label scores on test, and how the
    tuned prompt stands against it: not above it (with the way out), or above it and whether significantly."""
    from ..evaluate import constant_text

    line = f"{constant_text(const)} on test"
    if below:
        return line + (
            f": [yellow]the tuned prompt ({best_test:.3f}) is not above it; with every prompt this run "
            "found, the task model does not tell these cases apart better than one answer does. A larger "
            "model, or a starting prompt that states the task, may." + (
                " On this imbalanced set, --balanced weighs every label alike, so the search looks for a "
                "prompt that tells them apart rather than one that answers the common label." if skewed else "")
            + "[/]")
    return line + _gap_markup(const, "the tuned prompt")


def _gap_markup(const: dict[str, Any], subject: str) -> str:
    """`: <verdict.constant_gap_text>` for a prompt above the constant answer, in yellow when its lead is not
    significant; '' when it is not above it."""
    from ..verdict import ALPHA, constant_gap_text

    gap = constant_gap_text(const, subject=subject)
    if not gap:
        return ""
    return f": {gap}" if const["tuned_p"] < ALPHA else f": [yellow]{gap}[/]"


def optimize_summary(r: dict[str, Any]) -> Table:
    from ..verdict import p_text

    t = Table(title=f"run {r['run_id']}", title_justify="left")
    t.add_column("")
    t.add_column("baseline", justify="right")
    t.add_column("best", justify="right")
    t.add_row("val score", _fmt(r["baseline_val"]), _fmt(r["best_val"]))
    t.add_row("test score", _fmt(r["baseline_test"]), _fmt(r["best_test"]))
    lo, hi = r["delta_ci95"]
    delta = r["best_test"] - r["baseline_test"]
    verdict = "[bold green]significant[/]" if r["significant"] else "[yellow]not significant[/]"
    t.add_row("test gain", "", f"{delta:+.3f} (95% CI {lo:+.3f}…{hi:+.3f})")
    t.add_row("paired test", "", f"{p_text(r['p_value'])} · {verdict}")
    t.add_row("cases fixed / broken", "", f"{r['test_wins']} / {r['test_losses']}")
    if r.get("lineage"):
        from ..pool import steps_text

        t.add_row("steps to the best", "", steps_text(r["lineage"]))
    if r.get("held_back"):
        from ..pool import held_back_text

        t.add_row("held back", "", held_back_text(r["held_back"], r["best_val"]))
    cov = r.get("test_cases")
    if cov:
        from ..verdict import coverage_text

        t.add_row("test cases compared", "", coverage_text(cov))
    if r.get("objective") == "cost" or r.get("chosen_by", "the best val score") != "the best val score":
        t.add_row("chosen", "", f"{r['best_candidate']}: {r['chosen_by']}")
        chosen = next((p for p in r.get("frontier") or [] if p["chosen"]), None)
        if chosen:
            t.add_row("tokens / request", "", f"{chosen['prompt_tokens']:.0f} prompt + "
                      f"{chosen['completion_tokens']:.0f} completion")
    lab = r.get("test_labels")
    if lab:
        t.add_row("macro-F1 (test)", _fmt(lab["baseline"]["macro_f1"]), labels_text(lab["best"]))
        col = lab["best"].get("collapsed")
        if col and r["best_candidate"] != "baseline":
            t.add_row("[yellow]warning[/]", "", f"[yellow]the tuned prompt answers {col['label']!r} to "
                      f"{col['answers']} of {col['of']} test cases whatever the case: its gain is what that "
                      "constant answer gets. A larger --max-calls or a starting prompt that states the task may "
                      "find one that tells the cases apart.[/]")
        const = lab.get("constant")
        if const:
            below = r["best_test"] <= const["score"] and r["best_candidate"] != "baseline"
            # one label well above its even share: accuracy rewards answering it, and --balanced would not
            skewed = const["score"] > 1 / max(2, len(lab["best"]["f1_by_label"])) + 0.05
            line = constant_line(const, below=below, skewed=skewed, best_test=r["best_test"])
            t.add_row("constant answer", "", line)
    echo = r.get("test_echo")
    if echo:
        def cell(e: dict[str, Any] | None) -> str:
            return "–" if not e else f"{e['echoes']} of {e['of']}" + (f" ({e['passed']} passed)" if e["passed"] else "")

        t.add_row("copies of the input (test)", cell(echo["baseline"]), cell(echo["best"]))
        if echo["best"] and echo["best"]["passed"] and r["best_candidate"] != "baseline":
            t.add_row("[yellow]warning[/]", "", echo_line(echo["best"]) + " [yellow]Its gain may be the scorer's, "
                      "not the task's.[/]")
    ref = r.get("test_reference")
    if ref:
        from ..verdict import reference_text

        t.add_row(f"test by {ref['metric']}", _fmt(ref["baseline"]), _fmt(ref["best"]))
        if ref["disagrees"]:
            t.add_row("[yellow]warning[/]", "", "[yellow]" + reference_text(ref, (r["baseline_test"], r["best_test"]))
                      + "[/]")
    distinct = r.get("distinct_candidates")
    dups = f" · {distinct} distinct prompts scored, {r.get('duplicate_trials', 0)} duplicates" \
        if distinct is not None else ""
    t.add_row("trials", "", f"{r['trials']} ({r['pruned_trials']} pruned){dups} · stopped: {r['stop_reason']}")
    if r.get("reasoner"):
        t.add_row("reasoning model", "", r["reasoner"])
    judge = r.get("judge")
    if judge:
        t.add_row("judge", "", judge_text(judge))
        if (judge.get("known") or {}).get("warning"):
            t.add_row("[yellow]warning[/]", "", f"[yellow]{judge['known']['warning']}[/]")
    unspent = r.get("unspent_calls")
    left = f" · {unspent} of the --max-calls budget unspent" if unspent else ""
    t.add_row("calls", "", f"{r['model_calls']} paid · {r['cached_calls']} cached{left}")
    m = r.get("money") or {}
    if any((x or {}).get("cost_per_success") for x in (m.get("best"), m.get("baseline"))):  # free: nothing to show
        def per(x: dict[str, Any] | None) -> str:
            return "–" if not x or x.get("cost_per_success") is None else f"${x['cost_per_success']:.6f}"

        t.add_row("cost per success (test)", per(m.get("baseline")), per(m.get("best")))
    t.add_row("cost / time", "", f"${r['cost_usd']:.4f} · {r['elapsed_s'] / 60:.1f} min")
    return t


def judge_text(j: dict[str, Any]) -> str:
    """The judge's record in one line: self-agreement, contradictions, parse errors, how verdicts were asked."""
    sa = j.get("self_agreement") or {}
    parts = [f"self-agreement SD {sa['sd']:.3f} ({sa['n']} cases re-judged"
             + (f", pass/fail agrees {sa['pass_agree']:.0%})" if sa.get("pass_agree") is not None else ")")
             if sa.get("n", 0) >= 2 else "self-agreement not measured"]
    known = j.get("known") or {}
    if known.get("n"):
        parts.append(("[yellow]" if known.get("warning") else "") + f"known answers: {known_summary(known)}"
                     + ("[/]" if known.get("warning") else ""))
    parts.append(f"{j.get('contradictions', 0)} of {j.get('verdicts', 0)} verdicts contradict their score"
                 + second_opinion_text(j))
    if j.get("copies"):
        parts.append(f"{j['copies']} copies of the input failed unjudged")
    if j.get("restatements"):
        parts.append(f"{j['restatements']} answers giving the input back failed unjudged")
    if j.get("matches"):
        parts.append(f"{j['matches']} matches of the reference passed unjudged")
    if j.get("parse_errors"):
        parts.append(f"{j['parse_errors']} unparseable")
    parts.append(f"asked as {j.get('structured', 'text')}")
    if j.get("grades_own_answers"):
        parts.append("[red]grades its own answers[/]")
    return " · ".join(parts)


def prompt_diff(before: str, after: str) -> Any:
    from rich.syntax import Syntax

    from ..promptset import diff_lines

    diff = "\n".join(diff_lines(before, after))
    return Syntax(diff + "\n" if diff else "(no change: the baseline stays best)\n", "diff", word_wrap=True)


def compare_table(d: dict[str, Any]) -> Table:
    margin = f" · equivalence margin {d['margin']:.2f} (TOST)" if d.get("margin") is not None else ""
    t = Table(title=f"{d['compare_id']} · {d['n_test']} test cases{margin}", title_justify="left")
    for col in ("model", "baseline", "tuned (95% CI)", "gain", "pass rate", "$ / 1k req", "tokens / req",
                "$ / success", "latency p50/p95"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in d["rows"]:
        if r["error"]:
            t.add_row(r["model"], "[red]failed[/]", r["error"][:60], "", "", "", "", "", "")
            continue
        ci = r["tuned_ci95"]
        mark = " *" if r["significant_gain"] else ""
        t.add_row(
            ("[bold]" + r["model"] + "[/]") if r["model"] == d["recommendation"] else r["model"],
            _fmt(r["baseline"]), f"{_fmt(r['tuned'])} ({ci[0]:.2f}–{ci[1]:.2f})" if ci else _fmt(r["tuned"]),
            "–" if r["gain"] is None else f"{r['gain']:+.3f}{mark}", _fmt(r["pass_rate"]),
            ("– (price unknown: -m ID@price_in=,price_out= or --prices FILE)" if r["cost_per_1k"] is None else
             f"{r['cost_per_1k']:.4f}" + ("†" if _own_price(r) else "")),
            "–" if r["tokens_per_request"] is None else f"{r['tokens_per_request']:.0f}",
            "–" if r["cost_per_success"] is None else f"{r['cost_per_success']:.6f}",
            f"{_fmt(r['latency_p50_s'], 2)} / {_fmt(r['latency_p95_s'], 2)} s{cache_mark(r)}")
    own = [f"{r['model']}: {r['price_source']}" for r in d["rows"] if _own_price(r)]
    sel = d.get("selection")
    curse = (f"; the best, {sel['best']} ({sel['best_score']:.3f}), is picked on the same cases it is scored on: "
             f"picked on half of them and scored on the other half, the pick scores {sel['adjusted']:.3f} "
             f"(mean of {sel['splits']} halvings; the pick is {sel['best']} in {sel['pick_is_best']:.0%})"
             if sel else "")
    const = d.get("constant")
    if const:
        from ..evaluate import constant_text

        curse += f"; constant answer: {constant_text(const)}"
    from ..agreement import echo_warnings
    from ..recommend import failure_notes

    copies = "".join(f"; [yellow]{w}[/]" for w in echo_warnings(d["rows"]))
    copies += "".join(f"; [yellow]{w}[/]" for w in failure_notes(d["rows"], d["n_test"]))
    cached = cached_latency_note([r for r in d["rows"] if not r["error"]])
    t.caption = "* significant gain from tuning (paired test on the test split)" + (
        "; † price given by you: " + "; ".join(own) if own else "") + (f"; {cached}" if cached else "") + curse + copies
    return t


def _own_price(row: dict[str, Any]) -> bool:
    """The row's price came from the user (a model setting, a prices file, a GPU-hour rate), not a price map."""
    return row.get("price_source") not in (None, "", "litellm price map", "local model", "unknown")


def transfer_table(matrix: dict[str, dict[str, float | None]]) -> Table:
    models = list(matrix)
    t = Table(title="transfer: prompt tuned for (row) scored on (column)", title_justify="left")
    t.add_column("tuned for \\ scored on")
    for m in models:
        t.add_column(m, justify="right")
    for src in models:
        t.add_row(src, *(("[bold]" if src == dst else "") + _fmt(matrix[src].get(dst)) for dst in models))
    return t


def batch_table(d: dict[str, Any]) -> Table:
    t = Table(title=f"batch round {d['round']}", title_justify="left")
    for col in ("job", "model", "previous best", "new baseline", "new best", "change", "significant", "status",
                "calls", "cost"):
        t.add_column(col, justify="left" if col in ("job", "model", "status") else "right")
    for r in d["jobs"]:
        if r["status"] != "done":
            t.add_row(r["job"], r.get("model", ""), "", "", "", "", "", f"[red]{r['status']}[/]", "", "")
            continue
        prev = r.get("previous_best")
        change = "" if prev is None else f"{r['new_best'] - prev:+.3f}"
        status = "[bold red]REGRESSION[/]" if r.get("regression") else ("skipped (done)" if r.get("skipped") else "ok")
        t.add_row(r["job"], r["model"], _fmt(prev), _fmt(r["new_baseline"]), _fmt(r["new_best"]), change,
                  "yes" if r["significant"] else "no", status, str(r["model_calls"]), f"${r['cost_usd']:.4f}")
    return t


def runs_table(runs: list[Any], width: int = 160) -> Table:
    """`runs list`: the id never wraps (it is what you type next); on a narrow terminal only the columns that
    identify a run and its outcome are shown (`--json` has everything)."""
    from ..runs import age

    narrow = width < 120
    t = Table(title=f"{len(runs)} runs", title_justify="left")
    t.add_column("id", no_wrap=True, min_width=20)
    t.add_column("date", no_wrap=True)
    if not narrow:
        t.add_column("kind")
    t.add_column("dataset", overflow="fold")
    if not narrow:
        t.add_column("model", overflow="fold")
    t.add_column("baseline → best", no_wrap=True)
    if not narrow:
        t.add_column("sig.")
        t.add_column("calls", justify="right")
        t.add_column("cost", justify="right")
    t.add_column("status", no_wrap=True)
    for r in runs:
        score = "–" if r.best is None else (f"{r.baseline:.3f} → {r.best:.3f}" if r.baseline is not None
                                            else f"best {r.best:.3f}")
        if r.significant is not None and narrow:
            score += " *" if r.significant else ""
        sig = "" if r.significant is None else ("yes" if r.significant else "no")
        calls = r.calls_text()
        cost = "" if r.cost is None else f"${r.cost:.4f}"
        status = r.status if r.status == "done" else f"[yellow]{r.status}[/]"
        when = age(r.started)
        if narrow:
            t.add_row(r.id, when[5:], r.dataset, score, status)
        else:
            t.add_row(r.id, when, r.kind, r.dataset, r.model, score, sig, calls, cost, status)
    if narrow:
        t.caption = "* significant on test · widen the terminal or use --json for model, calls and cost"
    return t


def event_lines(console: Console, *, quiet: bool,
                lines: dict[str, Callable[[dict[str, Any]], str]]) -> Callable[[str, dict[str, Any]], None]:
    """An event callback that prints one line for each event kind in `lines` (nothing when quiet)."""
    def show(kind: str, data: dict[str, Any]) -> None:
        line = lines.get(kind)
        if line is not None and not quiet:
            console.print(line(data))

    return show


def worker_events(console: Console, *, quiet: bool) -> Callable[[str, dict[str, Any]], None]:
    return event_lines(console, quiet=quiet, lines={
        "study": lambda d: f"joined {d['study']} (run {d['run_id']})",
        "trial": lambda d: (f"  {d['candidate']:>5} {d['operator']:<24} {d['state']:<9} val {d['val']:.3f} "
                            f"({d['n_val']} cases)"),
    })


def print_worker(console: Console, reports: list[Any]) -> None:
    for r in reports:
        console.print(f"{r.study}: {r.trials} trials, {r.model_calls} paid calls")
    if not reports:
        console.print("no running study found")


def compare_events(console: Console, *, quiet: bool, tuning: bool) -> Callable[[str, dict[str, Any]], None]:
    def done(d: dict[str, Any]) -> str:
        row = d["row"]
        return f"[dim]{d['model']}: " + (f"failed: {row['error']}" if row["error"] else f"tuned {row['tuned']}") + "[/]"

    return event_lines(console, quiet=quiet, lines={
        "model_start": lambda d: f"[dim]{d['model']}: {'tuning' if tuning else 'scoring'}[/]",
        "model_done": done,
    })


def load_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="load test: the tuned prompt at rising concurrency (real calls, no cache)", title_justify="left")
    for col in ("model", "in flight", "calls", "HTTP requests", "429s", "errors", "req/s", "p50", "p95", "p99"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        for x in r.get("load") or []:
            t.add_row(r["model"], str(x["concurrency"]), str(x["requests"]), str(x["http_requests"]),
                      str(x["rate_limited"]), f"{x['error_rate']:.1%}", f"{x['throughput_rps']:.2f}",
                      *(("–" if x[k] is None else f"{x[k]:.2f} s") for k in ("p50_s", "p95_s", "p99_s")))
    return t


def print_compare(console: Console, result: dict[str, Any]) -> None:
    console.print(compare_table(result))
    if any(r.get("load") for r in result["rows"]):
        console.print(load_table(result["rows"]))
    if result["transfer"]:
        console.print(transfer_table(result["transfer"]))
    console.print(f"[bold]recommendation:[/] {result['reason']}" if result["recommendation"] else
                  f"no recommendation: {result['reason']}")


def batch_events(console: Console, *, quiet: bool) -> Callable[[str, dict[str, Any]], None]:
    def start(d: dict[str, Any]) -> str:
        how = "resuming" if d["resume"] else ("warm start from previous best" if d["warm_start"] else "first run")
        return f"{d['unit']}: {how}"

    return event_lines(console, quiet=quiet, lines={
        "round": lambda d: (f"[dim]round {d['round']}" + (" (resuming)" if d["resumed"] else "")
                            + f" · state in {d['state_dir']}[/]"),
        "skip": lambda d: f"[dim]{d['unit']}: finished earlier, skipped[/]",
        "unit_start": start,
    })


def print_batch(console: Console, result: dict[str, Any]) -> None:
    console.print(batch_table(result))
    for name in result["regressions"]:
        console.print(f"[bold red]regression:[/] {name}")
    for name in result["failed"]:
        console.print(f"[bold red]failed:[/] {name} (re-run the same command to retry)")


def print_run(console: Console, data: dict[str, Any]) -> None:
    """`runs show`: header, trajectory, summary and best prompt."""
    data = printable_data(data)
    info = data["run"]
    console.print(f"[bold]{info['id']}[/] · {info['kind']} · {info['status']} · {info['path']}")
    cfg = data["config"]
    if info["kind"] == "eval":
        if data.get("eval"):
            console.print(eval_table(data["eval"]["summary"], title=data["eval"]["name"]))
        if data.get("best_prompt"):
            console.print("[bold]prompt[/]")
            console.print(data["best_prompt"], markup=False, highlight=False)
        return
    pipe = cfg.get("pipeline")
    what = (f"pipeline {pipe['target']} · prompts {', '.join(n for n, _ in pipe['prompts'])}" if pipe
            else f"prompt {cfg['prompt_path']}")
    console.print(f"dataset {cfg['data']['path']} · {what}", highlight=False)
    if "compare" in data:
        console.print(compare_table(data["compare"]))
        return
    model = cfg.get("model", {}).get("id", "?")
    scorer = cfg.get("scorer", {})
    budget = cfg.get("budget", {})
    console.print(f"model {model} · scored by {scorer.get('metric') or scorer.get('judge', {}) or 'default'} · "
                  f"strategy {cfg.get('strategy', 'reflex')} · budget {budget.get('max_calls') or '-'} calls",
                  highlight=False)
    t = Table(title="trajectory", title_justify="left")
    named = any((c.get("params") or {}).get("target") for c in data["trajectory"])  # which prompt each changed
    for col in ("candidate", "operator", *(("prompt changed",) if named else ()), "parent", "state", "val", "cases"):
        t.add_column(col)
    for c in data["trajectory"]:
        target = ((str((c.get("params") or {}).get("target") or "")),) if named else ()
        t.add_row(c["id"], str(c["operator"]), *target, str(c.get("parent") or ""), c["state"],
                  "–" if c["val_mean"] is None else f"{c['val_mean']:.3f}", str(c["n_val"]))
    console.print(t)
    if data["summary"]:
        console.print(optimize_summary(data["summary"]))
    if data["best_prompt"]:
        console.print("[bold]best prompt[/]")
        console.print(data["best_prompt"], markup=False, highlight=False)


def print_diff(console: Console, d: dict[str, Any]) -> None:
    from rich.syntax import Syntax

    d = printable_data(d)
    named = [f"{d[run]}: {d[side]}" for run, side in (("a", "prompt_a"), ("b", "prompt_b"))
             if d.get(side) not in (None, "prompt", "best.md")]  # an eval of several prompts: which one
    if named:
        console.print("compared: " + " · ".join(named), markup=False, highlight=False)
    console.print(Syntax(d["prompt_diff"] or "(same best prompt)\n", "diff", word_wrap=True))
    console.print(f"{d['common_test_cases']} common test cases · {len(d['changed_cases'])} changed: "
                  f"{d['better_in_b']} better in {d['b']}, {d['worse_in_b']} worse")
    for c in d["changed_cases"][:20]:
        console.print(f"  case {c['case_id']}: {c['score_a']} → {c['score_b']} · {c['input'][:80]!r}", markup=False)


def print_dry_run(console: Console, err: Console, est: dict[str, Any]) -> None:
    cost = est["cost_estimate_usd"]
    console.print(f"estimated calls: about {est['calls_estimate']} (baseline {est['calls_baseline']}, search "
                  f"{est['calls_search']}, final test {est['calls_final_test']}"
                  + (f" + {est['calls_verdict_reserve']} kept for the judge's retries and re-judging"
                     if est.get("calls_verdict_reserve") else "")
                  + (f", judge self-agreement and known answers {est['calls_judge_checks']}"
                     if est.get("calls_judge_checks") else "") + "); estimated cost: "
                  + ("$0 (local/fake model)" if cost == 0 else f"${cost:.4f}" if cost else "unknown price"))
    if est.get("warning"):
        err.print(f"[yellow]warning:[/] {est['warning']}")


def print_optimize(console: Console, result: Any) -> None:
    r = result.to_json()
    console.print(optimize_summary(r))
    console.print(prompt_diff(printable(result.baseline_prompt), printable(result.best_prompt)))
    verdict = "a significant gain" if result.significant else "no significant gain (keep testing before shipping)"
    col = ((r.get("test_labels") or {}).get("best") or {}).get("collapsed")
    if col and result.best_candidate != "baseline":  # a gain that one constant answer gets is not a tuned prompt
        from ..metrics import collapsed_text

        verdict += f", but it {collapsed_text(col)} on test (see the warning above)"
    console.print(f"best prompt: {result.best_prompt_path} · {verdict}")
