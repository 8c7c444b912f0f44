"""Self-contained HTML report of a run (or a comparison): inline SVG plots, inline CSS, no script, no network.

Everything that comes from data (inputs, outputs, prompts, reasoning, model names) is HTML-escaped.
"""

from __future__ import annotations

from collections import Counter
from html import escape
from pathlib import Path
from typing import Any

from .agreement import echo_text, echo_warnings, known_summary, second_opinion_text
from .evaluate import CACHED_LATENCY, CaseResult, EvalReport, constant_text
from .metrics import collapsed_text
from .paths import write_text_atomic
from .pool import held_back_text, lineage, steps_text
from .promptset import diff_lines
from .recommend import failure_notes
from .store import RunStore, read_json, read_jsonl
from .textsafe import printable
from .verdict import ALPHA, constant_gap_text, coverage_text, p_text, reference_text

CSS = """
body{font:14px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1080px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid #dde1e7;padding-bottom:4px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:14px 16px;margin:10px 0}
.kpis{display:flex;gap:12px;flex-wrap:wrap}.kpi{flex:1;min-width:150px}
.kpi b{display:block;font-size:22px}.muted{color:#667085}.good{color:#067647}.bad{color:#b42318}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border-bottom:1px solid #eaecf0;padding:5px 8px;
text-align:left;vertical-align:top}th{background:#f2f4f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{white-space:pre-wrap;word-break:break-word;background:#f8f9fb;border:1px solid #eaecf0;border-radius:6px;
padding:8px;margin:4px 0;font-size:12px;max-height:260px;overflow:auto}
.add{background:#dcfae6}.del{background:#fee4e2}.tag{display:inline-block;border-radius:10px;padding:0 8px;
font-size:12px;background:#eef2ff}.case{border-left:3px solid #d0d5dd;padding-left:10px;margin:12px 0}
.case.fixed,.case.better{border-color:#17b26a}.case.broken,.case.worse{border-color:#f04438}
summary{cursor:pointer;padding:2px 0}
"""


def _cached(r: dict[str, Any]) -> str:
    """A ‡ (with its meaning on hover) after a latency read from the cache."""
    if not r.get("latency_from_cache"):
        return ""
    return f"<span class=muted title='{escape(CACHED_LATENCY)}'>‡</span>"


def _cached_note(rows: list[dict[str, Any]]) -> str:
    """The ‡'s meaning under a table that has one."""
    return (f"<p class=muted>‡ {escape(CACHED_LATENCY)}</p>"
            if any(r.get("latency_from_cache") and not r.get("error") for r in rows) else "")


def page(title: str, body: str, *, refresh_s: int | None = None, nav: str = "") -> str:
    """The report's page. `refresh_s`: the browser reloads it (the live view of a running run; no script);
    `nav`: trusted markup put above the body (the live view's link back to the run list)."""
    refresh = f"<meta http-equiv=refresh content={int(refresh_s)}>" if refresh_s else ""
    body = printable(body)  # NUL, ESC and bidi overrides from the data are shown, not obeyed
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>{refresh}"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{CSS}</style></head>"
            f"<body><main>{nav}{body}</main></body></html>")


def _f(x: float | None, nd: int = 3) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def trajectory_svg(cands: list[dict[str, Any]], accepted: list[str]) -> str:
    # in trial order: the baseline first, the search's trials by number, then what was scored after the search
    # (`--objective cost`'s cheaper variants, which have no trial number), whatever order they were recorded in
    pts = sorted((c for c in cands if c.get("val_mean") is not None),
                 key=lambda c: (c["id"] != "baseline", c.get("trial") is None, c.get("trial") or 0))
    if not pts:
        return "<p class=muted>No trial has a val score yet.</p>"
    w, h, pad = 960, 260, 36
    n = max(2, len(pts))
    xs = [pad + i * (w - 2 * pad) / (n - 1) for i in range(len(pts))]

    def y(v: float) -> float:
        return h - pad - v * (h - 2 * pad)

    parts = [f"<svg viewBox='0 0 {w} {h}' width='100%' role=img aria-label='val score of every trial'>"]
    for t in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f"<line x1={pad} x2={w - pad} y1={y(t):.1f} y2={y(t):.1f} stroke='#eaecf0'/>"
                     f"<text x=4 y={y(t) + 4:.1f} font-size=11 fill='#667085'>{t:.2f}</text>")
    acc = [(xs[i], y(c["val_mean"])) for i, c in enumerate(pts) if c["id"] in accepted]
    if len(acc) > 1:
        path = " ".join(f"{x:.1f},{yy:.1f}" for x, yy in acc)
        parts.append(f"<polyline points='{path}' fill=none stroke='#f79009' stroke-width=2.5/>")
    first_of: dict[str, str] = {}
    for c in pts:
        first_of.setdefault(c.get("key") or c["id"], c["id"])
    for i, c in enumerate(pts):
        x, yy = xs[i], y(c["val_mean"])
        target = (c.get("params") or {}).get("target")
        dup = (c.get("params") or {}).get("duplicate_of") or (
            first_of.get(c.get("key") or "") if c.get("state") == "duplicate" else None)
        state = f"duplicate of {dup} (scores reused, no calls)" if dup else c.get("state", "")
        if (c.get("params") or {}).get("collapsed"):
            state += " · " + collapsed_text(c["params"]["collapsed"])
        label = escape(f"{c['id']} · {c.get('operator', '')}{' → ' + str(target) if target else ''} · "
                       f"{state} · val {c['val_mean']:.3f} ({c.get('n_val', 0)} cases)")
        if dup:
            shape = (f"<rect x={x - 4:.1f} y={yy - 4:.1f} width=8 height=8 fill='#fff' stroke='#d0d5dd' "
                     "stroke-width=1.5 class=dup/>")
        elif c["id"] in accepted:
            shape = f"<circle cx={x:.1f} cy={yy:.1f} r=6 fill='#f79009'/>"
        elif c.get("state") == "pruned":
            shape = (f"<circle cx={x:.1f} cy={yy:.1f} r=5 fill='#fff' stroke='#98a2b3' stroke-width=1.5/>"
                     f"<line x1={x - 3:.1f} y1={yy - 3:.1f} x2={x + 3:.1f} y2={yy + 3:.1f} stroke='#98a2b3'/>")
        else:
            shape = f"<circle cx={x:.1f} cy={yy:.1f} r=5 fill='#2e90fa'/>"
        parts.append(f"<g><title>{label}</title>{shape}</g>")
        if i % max(1, len(pts) // 24 + 1) == 0 or c["id"] in accepted:  # the candidate id under its point
            parts.append(f"<text x={x:.1f} y={h - pad + 14} font-size=10 text-anchor=middle "
                         f"fill='#667085'>{escape(c['id'])}</text>")
    parts.append(f"<text x={pad} y={h - 8} font-size=11 fill='#667085'>trials in order → · orange: accepted path · "
                 "hollow: pruned (scored on part of val) · blue: completed · grey square: duplicate of an earlier "
                 "prompt</text></svg>")
    return _svg("".join(parts))


def _svg(markup: str) -> str:
    """In HTML an unquoted attribute value swallows a directly following '/': keep self-closing tags apart."""
    return markup.replace("/>", " />")


def diff_html(a: str, b: str, sides: tuple[str, str] = ("baseline", "best")) -> str:
    rows = []
    for line in diff_lines(a, b, sides):
        cls = "add" if line.startswith("+") and not line.startswith("+++") else \
            "del" if line.startswith("-") and not line.startswith("---") else ""
        rows.append(f"<div class='{cls}'>{escape(line) or '&nbsp;'}</div>")
    return f"<pre>{''.join(rows) or 'no change: the baseline stayed best'}</pre>"


def _case_block(kind: str, base: CaseResult, best: CaseResult | None = None, expand: bool = False,
                sides: tuple[str, ...] = ("baseline", "best")) -> str:
    """One case, folded: its input, each side's output and the reference; `best` None shows one result (its
    output unlabelled, no tag)."""
    shown = [("", base)] if best is None else list(zip(sides, (base, best), strict=False))
    ref = f"<div><b>reference</b><pre>{escape(base.ideal or '')}</pre></div>" if base.ideal is not None else ""
    why = "".join(f"<div class=muted>{escape(lbl) + ': ' if lbl else ''}{escape(r.reasoning)}</div>"
                  for lbl, r in shown if r.reasoning)
    scores = " → ".join(_f(r.score) for _, r in shown)
    tag = f"<span class=tag>{escape(kind)}</span> " if best is not None else ""
    head = (f"{tag}case {escape(base.case_id)} · score {scores} · <span class=muted>{escape(base.input[:90])}"
            "</span>")
    outputs = "".join(f"<div><b>{escape(lbl + ' output' if lbl else 'output')}</b><pre>"
                      f"{escape(r.output or r.error or '')}</pre></div>" for lbl, r in shown)
    return (f"<details class='case {kind}'{' open' if expand else ''}><summary>{head}</summary>"
            f"<div><b>input</b><pre>{escape(base.input)}</pre></div>{outputs}{ref}{why}</details>")


def _lineage(cands: dict[str, dict[str, Any]], best: str) -> str:
    chain = lineage(cands, best, lambda c: c.get("parent"))
    named = any((c.get("params") or {}).get("target") for c in chain)  # several prompts: which one each changed
    rows = "".join(f"<tr><td>{escape(c['id'])}</td><td>{escape(str(c.get('operator')))}</td>"
                   + (f"<td>{escape(str((c.get('params') or {}).get('target') or ''))}</td>" if named else "")
                   + f"<td class=num>{_f(c.get('val_mean'))}</td><td>{escape(str(c.get('reasoning') or '')[:600])}"
                   "</td></tr>" for c in chain)
    head = "<th>step</th><th>operator</th>" + ("<th>prompt changed</th>" if named else "") + "<th>val</th><th>why</th>"
    return f"<table><tr>{head}</tr>{rows}</table>"


def _phases(events: list[dict[str, Any]]) -> dict[str, float]:
    """Minutes by phase from the run's events: the search starts when the baseline is scored (`baseline`; older
    runs: at their first proposal, diagnosis or trial, which a DSPy strategy emits only at its end)."""
    t = {e["event"]: e["t"] for e in reversed(events)}
    first_search = t.get("baseline") or next((e["t"] for e in events if e["event"] in ("proposal", "diagnosis",
                                                                                      "trial")), None)
    stop = next((e["t"] for e in reversed(events) if e["event"] == "stop"), None)
    done = next((e["t"] for e in reversed(events) if e["event"] == "done"), None)
    out: dict[str, float] = {}
    if "start" in t and first_search:
        out["baseline"] = first_search - t["start"]
    if first_search and stop:
        out["search"] = stop - first_search
    if stop and done:
        out["final test"] = done - stop
    return out


def run_report(path: Path, *, refresh_s: int | None = None, nav: str = "", running: bool = False) -> str:
    """The run's report; with `running` (the live view), the progress so far at the top, and nothing read from
    outside the run directory."""
    store = RunStore(path)
    cfg = store.config()
    summary = store.summary()
    cands = sorted(store.candidates(), key=lambda c: (c.get("trial") is not None, c.get("trial") or 0))
    by_id = {c["id"]: c for c in cands}
    events = store.events()
    evals = store.evals()
    base_md = store.baseline_markdown(from_file=not running)
    best_md = summary["best_prompt"] if summary else base_md
    accepted = list(summary.get("accepted_path") or []) if summary else []
    if not accepted:  # older or interrupted runs: the path of strict improvements in trial order
        best_val = -1.0
        for c in cands:
            if c.get("state") in ("complete", None) and c.get("val_mean") is not None and c["val_mean"] > best_val:
                if c["id"] == "baseline" or c.get("n_val") == max((x.get("n_val") or 0) for x in cands):
                    accepted.append(c["id"])
                    best_val = c["val_mean"]
    best_id = summary["best_candidate"] if summary else (accepted[-1] if accepted else "baseline")
    if not summary:  # the best so far: the end of the accepted path
        best_md = store.candidate_markdown(best_id) or base_md
    status = ("finished" if summary else "running (this page reloads itself)" if running
              else "interrupted or still running (partial report)")
    title = f"reflexopt run {path.name}"
    body = [f"<h1>{escape(title)}</h1><div class=muted>{escape(Path(cfg['data']['path']).name)} · model "
            f"{escape(cfg['model']['id'])} · strategy {escape(str(cfg.get('strategy') or 'reflex'))} · "
            f"{escape(status)}</div>"]
    if summary:
        sig = ("<span class=good>significant</span>" if summary["significant"]
               else "<span class=bad>not significant</span>")
        d = summary["best_test"] - summary["baseline_test"]
        lo, hi = summary["delta_ci95"]
        body.append(
            "<div class='card kpis'>"
            f"<div class=kpi>baseline test<b>{_f(summary['baseline_test'])}</b></div>"
            f"<div class=kpi>best test<b>{_f(summary['best_test'])}</b></div>"
            f"<div class=kpi>gain<b>{d:+.3f}</b><span class=muted>95% CI {lo:+.3f} … {hi:+.3f}</span></div>"
            f"<div class=kpi>paired test<b>{p_text(summary['p_value'])}</b>{sig}</div>"
            + _money_kpi(summary.get("money")) + _labels_kpi(summary.get("test_labels"), summary.get("best_test"))
            + _echo_kpi(summary.get("test_echo")) + _reference_kpi(summary) +
            f"<div class=kpi>trials<b>{summary['trials']}</b><span class=muted>{summary['pruned_trials']} pruned · "
            f"{escape(summary['stop_reason'])}</span></div>"
            + (f"<div class=kpi>test cases compared<b>{summary['test_cases']['paired']} of "
               f"{summary['test_cases']['n']}</b><span class=muted>"
               f"{escape(coverage_text(summary['test_cases']).partition(' (')[2].rstrip(')'))}"
               "</span></div>" if summary.get("test_cases") else "") + "</div>")
    if not summary:
        pr = store.progress()
        trials = sum(1 for c in cands if c.get("trial") is not None)
        body.append(
            "<div class='card kpis'>"
            f"<div class=kpi>trials so far<b id=trials>{trials}</b></div>"
            f"<div class=kpi>baseline val<b>{_f(pr.get('baseline_val'))}</b></div>"
            f"<div class=kpi>best val<b>{_f(pr.get('best_val'))}</b></div>"
            f"<div class=kpi>paid calls<b>{pr.get('calls', '–')}</b></div>"
            f"<div class=kpi>cost<b>${float(pr.get('cost_usd') or 0):.4f}</b></div></div>")
    distinct = len({c.get("key") or c["id"] for c in cands if c.get("trial") is not None
                    and c.get("state") != "duplicate" and c.get("val_mean") is not None})
    dups = sum(1 for c in cands if c.get("state") == "duplicate")
    body.append(f"<h2>Score trajectory (val): {distinct} distinct prompts scored, {dups} duplicate trials</h2>"
                "<div class=card>" + trajectory_svg(cands, accepted) + "</div>")
    if summary and summary.get("judge"):
        body.append("<h2>The judge</h2><div class=card>" + judge_html(summary["judge"], summary.get("reasoner"))
                    + "</div>")
    if summary and summary.get("frontier"):
        body.append("<h2>Score against cost (candidates scored on all of val)</h2><div class=card>"
                    + frontier_html(summary) + "</div>")
    if summary:
        bt, nt = store.results(base_md, "test", evals), store.results(best_md, "test", evals)
        common = [c for c in bt if c in nt]
        fixed = [c for c in common if (nt[c].score or 0) > (bt[c].score or 0)]
        broken = [c for c in common if (nt[c].score or 0) < (bt[c].score or 0)]
        body.append(f"<h2>Baseline vs best on test: {len(fixed)} cases fixed, {len(broken)} broken</h2>")
        blocks = [_case_block("broken", bt[c], nt[c], i < 2) for i, c in enumerate(broken[:50])] + \
            [_case_block("fixed", bt[c], nt[c], i < 2) for i, c in enumerate(fixed[:50])]
        body.append("<div class=card>" + ("".join(blocks) or "<p class=muted>No case changed.</p>") + "</div>")
        cb = Counter(r.category for r in bt.values() if r.category)
        cn = Counter(r.category for r in nt.values() if r.category)
        rows = "".join(f"<tr><td>{escape(k)}</td><td class=num>{cb.get(k, 0)}</td><td class=num>{cn.get(k, 0)}"
                       "</td></tr>" for k in sorted(set(cb) | set(cn), key=lambda k: -(cb.get(k, 0) + cn.get(k, 0))))
        body.append("<h2>Failure categories on test</h2><div class=card><table><tr><th>category</th><th>baseline"
                    f"</th><th>best</th></tr>{rows or '<tr><td colspan=3>none</td></tr>'}</table></div>")
    so_far = "" if summary else f" (best so far: {escape(best_id)})"
    body.append(f"<h2>Prompt diff{so_far}</h2><div class=card>" + diff_html(base_md, best_md) + "</div>")
    steps = (summary or {}).get("lineage")
    said = f"<p>{escape(steps_text(steps))}</p>" if steps else ""  # with ✓ where a step was a new best
    kept = (summary or {}).get("held_back")
    if summary and kept:
        said += f"<p class=muted>Held back: {escape(held_back_text(kept, summary['best_val']))}.</p>"
    body.append("<h2>Lineage of the best prompt</h2><div class=card>" + said + _lineage(by_id, best_id) + "</div>")
    usage: dict[str, Any] = (summary or {}).get("usage") or next(
        (e["usage"] for e in reversed(events) if e.get("usage")), {})
    roles = usage.get("by_role", {}) if usage else {}
    names = {"task": "evaluation (task model)", "judge": "judging", "reasoning": "reasoning (diagnose, propose)"}
    rows = "".join(f"<tr><td>{escape(names.get(k, k))}</td><td class=num>{v['model_calls']}</td><td class=num>"
                   f"{v['cached_calls']}</td><td class=num>{v['prompt_tokens']:,}</td><td class=num>"
                   f"{v['completion_tokens']:,}</td><td class=num>${v['cost_usd']:.4f}</td></tr>"
                   for k, v in roles.items())
    phases = "".join(f"<tr><td>{escape(k)}</td><td class=num>{v / 60:.1f} min</td></tr>"
                     for k, v in _phases(events).items())
    body.append("<h2>Calls, tokens, cost and time</h2><div class=card><table><tr><th>phase</th><th>paid calls</th>"
                "<th>cached</th><th>prompt tokens</th><th>completion tokens</th><th>cost</th></tr>"
                f"{rows}</table><table style='margin-top:10px;width:auto'><tr><th>phase</th><th>time</th></tr>"
                f"{phases}</table></div>")
    return page(title, "".join(body), refresh_s=refresh_s, nav=nav)


def _variants_html(rows: list[dict[str, Any]]) -> str:
    """Several prompts on the same cases: each one's score and costs, and each after the first against it."""
    out = []
    for r in rows:
        c, ci = r["change"], r["ci95"]
        if c is None or c["ci95"] is None:
            change = "the first" if c is None else "no case scored for both"
            verdict = ""
        else:
            change = f"{c['delta']:+.3f} ({c['ci95'][0]:+.3f} … {c['ci95'][1]:+.3f}), {p_text(c['p_value'])}"
            verdict = (f"<span class={ {'worse': 'bad', 'better': 'good'}.get(c['verdict'], 'muted') }>"
                       f"{escape(c['verdict'])}</span>")
        cost = "–" if r["cost_per_success"] is None else f"${r['cost_per_success']:.6f}"
        out.append(f"<tr><td>{escape(str(r['prompt']))}</td><td class=num>{_f(r['score'])}"
                   + (f" <span class=muted>({ci[0]:.3f} … {ci[1]:.3f})</span>" if ci else "")
                   + f"</td><td class=num>{_f(r['pass_rate'])}</td><td class=num>{escape(change)}</td><td>{verdict}"
                   f"</td><td class=num>{_f(r['prompt_tokens_per_case'], 1)}</td><td class=num>{cost}</td>"
                   f"<td class=num>{_f(r['latency_p95_s'], 2)}{_cached(r)}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("prompt", "score (95% CI)", "pass rate", "change against the first",
                                             "verdict", "prompt tokens", "cost per success", "p95 s"))
    return (f"<h2>{len(rows)} prompts on the same cases</h2><div class=card><p class=muted>Each prompt after the "
            "first is compared with it case by case; the p-values are Holm-adjusted over those comparisons.</p>"
            f"<table><tr>{head}</tr>{''.join(out)}</table>{_cached_note(rows)}</div>")


def eval_report(report: EvalReport, *, title: str, nav: str = "") -> str:
    """An `eval` run's page: the score and what it cost, the judge's record, and with `--against` the change, the
    gate, the cases that got worse and better side by side (both answers, the reference, the scorer's reasons)
    and the prompt diff; without it, the lowest-scoring cases."""
    s = report.summary()
    lo, hi = s["ci95"] or (None, None)
    money = s.get("money") or {}
    kpis = [f"<div class=kpi>score<b>{_f(s['score'])}</b><span class=muted>95% CI {_f(lo)} … {_f(hi)}</span></div>",
            f"<div class=kpi>pass rate<b>{_f(s['pass_rate'])}</b><span class=muted>{s['n_scored']} of "
            f"{s['n_cases']} cases scored</span></div>"]
    const = _constant_html(s["constant"], s["score"], "this prompt") if s.get("constant") else ""
    if s.get("labels"):
        col = s["labels"].get("collapsed")
        ba = s["labels"].get("balanced_accuracy")
        kpis.append(f"<div class=kpi>macro-F1<b>{s['labels']['macro_f1']:.3f}</b>"
                    + (f"<span class=muted>balanced accuracy {ba:.3f}</span>" if ba is not None else "")
                    + (f"<span class=bad>{escape(collapsed_text(col))}</span>" if col else "") + const + "</div>")
    elif const:
        kpis.append(f"<div class=kpi>constant answer<b>{s['constant']['score']:.3f}</b>{const}</div>")
    if money.get("cost_per_success"):
        kpis.append(f"<div class=kpi>cost per success<b>${money['cost_per_success']:.6f}</b><span class=muted>"
                    f"${money['cost_per_1k']:.4f} per 1,000 requests</span></div>")
    if s.get("latency_p95_s") is not None:
        kpis.append(f"<div class=kpi>latency p95<b>{s['latency_p95_s']:.2f} s{_cached(s)}</b><span class=muted>p50 "
                    f"{_f(s['latency_p50_s'], 2)} s" + (f"<br>‡ {escape(CACHED_LATENCY)}" if s.get("latency_from_cache")
                                                       else "") + "</span></div>")
    a, gate = report.against, s.get("gate")
    if a and a.get("ci95"):
        cls = {"worse": "bad", "better": "good"}.get(a["verdict"], "muted")
        kpis.append(f"<div class=kpi>change against the old prompt<b>{a['delta']:+.3f}</b><span class=muted>"
                    f"{a['old_score']:.3f} → {a['new_score']:.3f} · 95% CI {a['ci95'][0]:+.3f} … {a['ci95'][1]:+.3f}"
                    f" · {p_text(a['p_value'])}</span><span class={cls} style='display:block'>"
                    f"{escape(a['verdict'])}</span></div>")
    if gate is not None:
        kpis.append(f"<div class=kpi>gate<b class={'good' if gate['passed'] else 'bad'}>"
                    f"{'passed' if gate['passed'] else 'failed'}</b><span class=muted>"
                    f"{escape('; '.join(gate['reasons']))}</span></div>")
    body = [f"<h1>{escape(title)}</h1><div class=muted>{escape(s['scorer'])}</div>",
            "<div class='card kpis'>" + "".join(kpis) + "</div>"]
    if report.variants:
        body.append(_variants_html(report.variants))
    if s.get("judge"):
        body.append("<h2>The judge</h2><div class=card>" + judge_html(s["judge"], None) + "</div>")
    prompt, old_prompt = report.prompt_text, report.against_text
    if a is not None and old_prompt is not None:
        old = {r.case_id: r for r in report.against_results}
        pairs = [(old[r.case_id], r) for r in report.results if r.case_id in old]
        worse = sorted((p for p in pairs if (p[1].score or 0) < (p[0].score or 0)),
                       key=lambda p: (p[1].score or 0) - (p[0].score or 0))
        better = sorted((p for p in pairs if (p[1].score or 0) > (p[0].score or 0)),
                        key=lambda p: (p[0].score or 0) - (p[1].score or 0))
        sides = ("old prompt", "this prompt")
        blocks = [_case_block("worse", o, n, i < 2, sides) for i, (o, n) in enumerate(worse[:50])] + \
            [_case_block("better", o, n, False, sides) for o, n in better[:50]]
        cases = f"{len(worse)} case{'' if len(worse) == 1 else 's'} worse, {len(better)} better"
        body.append(f"<h2>Against {escape(str(a['prompt']))}: {cases}</h2>"
                    "<div class=card>" + ("".join(blocks) or "<p class=muted>No case changed.</p>") + "</div>")
        body.append("<h2>Prompt diff (old → this)</h2><div class=card>" + diff_html(old_prompt, prompt, ("old", "this"))
                    + "</div>")
    else:
        low = sorted((r for r in report.results if (r.score or 0) < 1), key=lambda r: r.score or 0)  # stable
        blocks = [_case_block("broken", r, None, i < 2) for i, r in enumerate(low[:50])]
        body.append(f"<h2>Lowest-scoring cases: {len(low)} below full marks</h2><div class=card>"
                    + ("".join(blocks) or "<p class=muted>Every case scored full marks.</p>") + "</div>")
        if prompt:
            body.append(f"<h2>The prompt</h2><div class=card><pre>{escape(prompt)}</pre></div>")
    cats = s.get("failure_categories") or {}
    rows = "".join(f"<tr><td>{escape(str(k))}</td><td class=num>{v}</td></tr>" for k, v in cats.items())
    body.append("<h2>Failure categories</h2><div class=card><table><tr><th>category</th><th>cases</th></tr>"
                f"{rows or '<tr><td colspan=2>none</td></tr>'}</table></div>")
    body.append(f"<h2>Calls and tokens</h2><div class=card>{s['model_calls']} paid calls · {s['cached_calls']} "
                f"from cache · {s['prompt_tokens']:,} prompt and {s['completion_tokens']:,} completion tokens · "
                f"${s['cost_usd']:.4f}</div>")
    return page(title, "".join(body), nav=nav)


def _money_kpi(m: dict[str, Any] | None) -> str:
    """The headline money figure: the best prompt's cost per successful task on test (and the baseline's)."""
    best, base = (m or {}).get("best") or {}, (m or {}).get("baseline") or {}
    if not best.get("cost_per_success"):  # unknown, or free (a local model): no money to show
        return ""
    was = f"baseline ${base['cost_per_success']:.6f} · " if base.get("cost_per_success") is not None else ""
    return (f"<div class=kpi>cost per success<b>${best['cost_per_success']:.6f}</b><span class=muted>{was}"
            f"{escape(str(m.get('price_source', '')))}</span></div>") if m else ""


def _labels_kpi(lab: dict[str, Any] | None, best_test: float | None = None) -> str:
    """A label task's macro-F1 on test beside the score (an imbalanced set can give a one-label prompt a high
    accuracy), with F1 by label, and what answering the most common label to every case scores."""
    if not lab:
        return ""
    by = " · ".join(f"{escape(str(k))} {v:.2f}" for k, v in list(lab["best"]["f1_by_label"].items())[:8])
    col = lab["best"].get("collapsed")
    warn = f"<span class=bad style='display:block'>{escape(collapsed_text(col))} on test</span>" if col else ""
    if lab.get("constant"):
        warn += _constant_html(lab["constant"], best_test, "the tuned prompt")
    ba = lab["best"].get("balanced_accuracy")
    return (f"<div class=kpi>macro-F1 (test)<b>{lab['best']['macro_f1']:.3f}</b><span class=muted>baseline "
            f"{lab['baseline']['macro_f1']:.3f} · F1 {by}"
            + (f" · balanced accuracy {ba:.3f}" if ba is not None else "") + f"</span>{warn}</div>")


def _constant_html(const: dict[str, Any], score: float | None, subject: str) -> str:
    """What answering the most common label to every case scores, and how a prompt (`subject`, scoring `score`)
    stands against it: not above it, or above it and whether significantly (in red when not)."""
    below = score is not None and score <= const["score"]
    gap = None if below else constant_gap_text(const, short=True, subject=subject)
    weak = gap is not None and const["tuned_p"] >= ALPHA
    return (f"<span class={'bad' if below or weak else 'muted'} style='display:block'>"
            f"{escape(constant_text(const))}" + (f" — {subject} is not above it" if below else "")
            + (f" — {escape(gap)}" if gap else "") + "</span>")


def _reference_kpi(summary: dict[str, Any]) -> str:
    """A judged run's test answers by a reference metric (verdict.test_reference), in red where the references
    move the other way from the judge."""
    ref = summary.get("test_reference")
    if not ref:
        return ""
    said = reference_text(ref, (summary["baseline_test"], summary["best_test"]))
    warn = f"<span class=bad style='display:block'>{escape(said)}</span>" if ref["disagrees"] else ""
    return (f"<div class=kpi>test by {escape(ref['metric'])}<b>{ref['best']:.3f}</b><span class=muted>baseline "
            f"{ref['baseline']:.3f} · against the references, no judge</span>{warn}</div>")


def _echo_kpi(echo: dict[str, Any] | None) -> str:
    """How many test answers repeat their input unchanged where the reference changes it; in red when the scorer
    passed them (it grades meaning, not the change the task asks for)."""
    if not echo or not echo.get("best"):
        return ""
    e, b = echo["best"], echo.get("baseline")
    return (f"<div class=kpi>copies of the input (test)<b>{e['echoes']} of {e['of']}</b>"
            f"<span class={'bad' if e['passed'] else 'muted'} style='display:block'>{escape(echo_text(e))}</span>"
            f"<span class=muted>baseline {b['echoes'] if b else 0}</span></div>")


def judge_html(j: dict[str, Any], reasoner: str | None) -> str:
    """Self-agreement, contradictions (with the flagged verdicts), parse errors, how verdicts were asked."""
    sa = j.get("self_agreement") or {}
    if sa.get("n", 0) >= 2:
        agree = f", pass/fail agrees on {sa['pass_agree']:.0%}" if sa.get("pass_agree") is not None else ""
        self_line = (f"SD {sa['sd']:.3f} of one verdict on the 0..1 scale ({sa['n']} val cases re-judged{agree}; "
                     f"{escape(str(sa.get('method', '')))})")
    else:
        self_line = "not measured"
    own = "<p class=bad>The judge is the task model: it graded its own answers.</p>" \
        if j.get("grades_own_answers") else ""
    known = j.get("known") or {}
    known_line = (f"{escape(known_summary(known))} ({escape(str(known.get('method', '')))})"
                  + (f"<span class=bad style='display:block'>{escape(known['warning'])}</span>"
                     if known.get("warning") else "")) if known.get("n") else "not measured"
    flagged = "".join(f"<tr><td>{escape(str(f['case_id']))}</td><td class=num>{f['score']:g}</td><td>"
                      f"{escape(str(f['why']))}</td><td>{escape(str(f['reasoning']))}</td></tr>"
                      for f in j.get("flagged") or [])
    return (own + "<table style='width:auto'>"
            f"<tr><th>self-agreement</th><td>{self_line}</td></tr>"
            f"<tr><th>known answers</th><td>{known_line}</td></tr>"
            f"<tr><th>verdicts</th><td>{j.get('verdicts', 0)} · {j.get('contradictions', 0)} contradict their "
            f"score{escape(second_opinion_text(j))} · {j.get('parse_errors', 0)} unparseable after retries"
            + (f" · {j['copies']} copies of the input failed without a verdict (the reference changes the input)"
               if j.get("copies") else "")
            + (f" · {j['restatements']} answers that give the input back without the reference failed without a "
               "verdict" if j.get("restatements") else "")
            + (f" · {j['matches']} answers that say exactly what the reference says passed without a verdict"
               if j.get("matches") else "") + "</td></tr>"
            f"<tr><th>asked as</th><td>{escape(str(j.get('structured', 'text')))}</td></tr>"
            + (f"<tr><th>reasoning model</th><td>{escape(reasoner)}</td></tr>" if reasoner else "")
            + "</table>"
            + (f"<h3>Verdicts whose reasoning contradicts their score</h3><table><tr><th>case</th><th>score</th>"
               f"<th>why flagged</th><th>the judge's reasoning</th></tr>{flagged}</table>" if flagged else ""))


def frontier_html(summary: dict[str, Any]) -> str:
    """The candidates' val score against tokens and cost per request, cheapest first; the returned one marked."""
    rows = []
    for p in summary["frontier"]:
        mark = "<b>returned</b>" if p["chosen"] else ("not worse than the best" if p.get("not_worse") else "")
        cap = "" if p.get("within_cap", True) else " <span class=bad>over the prompt-token cap</span>"
        cost = "–" if p.get("cost_per_1k") is None else f"${p['cost_per_1k']:.4f}"
        rows.append(f"<tr><td>{escape(str(p['id']))}</td><td class=num>{p['val']:.3f}</td><td class=num>"
                    f"{p['prompt_tokens']:.0f}</td><td class=num>{p['completion_tokens']:.0f}</td><td class=num>"
                    f"{cost}</td><td>{mark}{cap}</td></tr>")
    pts = summary["frontier"]
    use_cost = any((p.get("cost_per_1k") or 0) > 0 for p in pts)
    chart = points_svg([(str(p["id"]), float((p.get("cost_per_1k") if use_cost else p["prompt_tokens"]) or 0),
                         float(p["val"]), bool(p["chosen"])) for p in pts],
                       "USD per 1,000 requests" if use_cost else "prompt tokens per request",
                       "val score (orange: returned)")
    return chart + (f"<p class=muted>objective: {escape(str(summary.get('objective', 'score')))} · "
            f"{escape(str(summary.get('chosen_by', '')))}</p><table><tr><th>candidate</th><th>val</th>"
            "<th>prompt tokens / req</th><th>completion tokens / req</th><th>$ / 1k req</th><th></th></tr>"
            + "".join(rows) + "</table>")


def points_svg(points: list[tuple[str, float, float, bool]], xlabel: str, ylabel: str) -> str:
    """A scatter of (label, x, y in 0..1, marked) points; marked ones are drawn orange."""
    if not points:
        return "<p class=muted>no scores</p>"
    w, h, pad = 720, 280, 48
    xmax = max(p[1] for p in points) * 1.1 or 1.0
    parts = [f"<svg viewBox='0 0 {w} {h}' width='100%' role=img aria-label='{escape(ylabel)} against "
             f"{escape(xlabel)}'>"]
    for t in (0, 0.5, 1):
        yy = h - pad - t * (h - 2 * pad)
        parts.append(f"<line x1={pad} x2={w - pad} y1={yy:.1f} y2={yy:.1f} stroke='#eaecf0'/>"
                     f"<text x=8 y={yy + 4:.1f} font-size=11 fill='#667085'>{t:.1f}</text>")
    placed: list[tuple[float, float, float]] = []  # each label's left edge, baseline and right edge
    for label, xv, yv, marked in sorted(points, key=lambda p: p[3]):  # the marked drawn last, on top
        x = pad + xv / xmax * (w - 2 * pad)
        yy = h - pad - yv * (h - 2 * pad)
        ly, right = yy - 8, x + 8 + 7 * len(label)
        while any(left < right and x + 8 < end and abs(py - ly) < 13 for left, py, end in placed):
            ly += 14  # points at (nearly) one place: their labels stack instead of printing over each other
        placed.append((x + 8, ly, right))
        parts.append(f"<g><title>{escape(label)}: {yv:.3f}</title><circle cx={x:.1f} cy={yy:.1f} r=6 "
                     f"fill='{'#f79009' if marked else '#2e90fa'}'/><text x={x + 8:.1f} y={ly:.1f} "
                     f"font-size=12>{escape(label)}</text></g>")
    parts.append(f"<text x={pad} y={h - 10} font-size=11 fill='#667085'>x: {escape(xlabel)} · y: {escape(ylabel)}"
                 "</text></svg>")
    return _svg("".join(parts))


def scatter_svg(rows: list[dict[str, Any]]) -> str:
    pts = [r for r in rows if r.get("tuned") is not None]
    use_cost = any((r.get("cost_per_1k") or 0) > 0 for r in pts)
    key = "cost_per_1k" if use_cost else "tokens_per_request"
    label = "USD per 1,000 requests" if use_cost else "tokens per request (no prices: local models)"
    return points_svg([(r["model"], float(r.get(key) or 0), float(r["tuned"] or 0), False) for r in pts], label,
                      "tuned test score")


def load_rows_html(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        for x in r.get("load") or []:
            cells = [str(x["concurrency"]), str(x["requests"]), str(x["http_requests"]), str(x["rate_limited"]),
                     f"{x['error_rate']:.1%}", f"{x['throughput_rps']:.2f}", _f(x["p50_s"], 2), _f(x["p95_s"], 2),
                     _f(x["p99_s"], 2)]
            out.append(f"<tr><td>{escape(r['model'])}</td>" + "".join(f"<td class=num>{c}</td>" for c in cells)
                       + "</tr>")
    return ("<table><tr><th>model</th><th>in flight</th><th>calls</th><th>HTTP requests</th><th>429s</th>"
            "<th>errors</th><th>req/s</th><th>p50 s</th><th>p95 s</th><th>p99 s</th></tr>" + "".join(out)
            + "</table>")


def load_svg(rows: list[dict[str, Any]]) -> str:
    """p95 latency (y) against concurrency (x, log scale), one line per model."""
    import math

    series = [(r["model"], [(x["concurrency"], x["p95_s"]) for x in r.get("load") or [] if x["p95_s"] is not None])
              for r in rows]
    series = [(m, pts) for m, pts in series if pts]
    if not series:
        return "<p class=muted>No load level answered.</p>"
    w, h, pad = 960, 240, 44
    xs = [c for _, pts in series for c, _ in pts]
    top = max(v for _, pts in series for _, v in pts) or 1.0
    lo, hi = math.log2(min(xs)), math.log2(max(xs)) or 1.0

    def px(c: float) -> float:
        return pad + (math.log2(c) - lo) / ((hi - lo) or 1.0) * (w - 2 * pad)

    def py(v: float) -> float:
        return h - pad - v / top * (h - 2 * pad)

    colors = ["#2e90fa", "#f79009", "#12b76a", "#f04438", "#7a5af8", "#667085"]
    parts = [f"<svg viewBox='0 0 {w} {h}' width='100%' role=img aria-label='p95 latency against concurrency'>",
             f"<text x=4 y=14 font-size=11 fill='#667085'>p95 (s), max {top:.2f}</text>"]
    for c in sorted(set(xs)):
        parts.append(f"<text x={px(c):.0f} y={h - 12} font-size=11 text-anchor=middle fill='#667085'>{c}</text>")
    for i, (model, pts) in enumerate(series):
        col = colors[i % len(colors)]
        line = " ".join(f"{px(c):.1f},{py(v):.1f}" for c, v in pts)
        parts.append(f"<polyline points='{line}' fill=none stroke='{col}' stroke-width=2/>")
        parts += [f"<circle cx={px(c):.1f} cy={py(v):.1f} r=4 fill='{col}'><title>{escape(model)}: {c} in flight, "
                  f"p95 {v:.2f} s</title></circle>" for c, v in pts]
        parts.append(f"<text x={w - pad} y={20 + 14 * i} font-size=11 text-anchor=end fill='{col}'>"
                     f"{escape(model)}</text>")
    return _svg("".join(parts) + "</svg>")


def _interrupted_compare(path: Path) -> dict[str, Any]:
    """What an interrupted compare has: the models that finished (rows.jsonl), no recommendation."""
    rows = list(read_jsonl(path / "rows.jsonl", ("model",)))
    cfg = read_json(path / "config.json")
    done = {r["model"] for r in rows}
    missing = [m.get("id", "?") for m in cfg.get("models", []) if m.get("id") not in done]
    reason = ("interrupted before every model finished (partial report)"
              + (f"; not finished: {', '.join(missing)}" if missing else ""))
    return {"rows": rows, "reason": reason, "n_test": "?", "transfer": None}


def _curse_html(sel: dict[str, Any] | None) -> str:
    """The best model's score re-estimated for the winner's curse (picked and scored on separate halves)."""
    if not sel:
        return ""
    return (f"<p class=muted>The best, {escape(str(sel['best']))} ({_f(sel['best_score'])}), was picked on the test "
            f"cases it is scored on. Picked on half of them and scored on the other half, the pick scores "
            f"{_f(sel['adjusted'])} (mean of {sel['splits']} halvings of {sel['cases']} cases); the pick is "
            f"{escape(str(sel['best']))} in {sel['pick_is_best']:.0%} of them.</p>")


def compare_report(path: Path, *, refresh_s: int | None = None, nav: str = "") -> str:
    data = read_json(path / "compare.json") if (path / "compare.json").exists() else _interrupted_compare(path)
    title = f"reflexopt {path.name}"
    head = ("<tr><th>model</th><th>baseline</th><th>tuned</th><th>95% CI</th><th>gain</th><th>pass rate</th>"
            "<th>$ / 1k req</th><th>tokens / req</th><th>$ / success</th><th>latency p50 / p95</th></tr>")
    rows = []
    for r in data["rows"]:
        if r.get("error"):
            rows.append(f"<tr><td>{escape(r['model'])}</td><td colspan=9 class=bad>{escape(r['error'])}</td></tr>")
            continue
        ci = r.get("tuned_ci95") or [None, None]
        gain = "" if r["gain"] is None else "{:+.3f}".format(r["gain"])
        star = " *" if r["significant_gain"] else ""
        cells = [_f(r["baseline"]), _f(r["tuned"]), f"{_f(ci[0])} – {_f(ci[1])}", gain + star, _f(r["pass_rate"]),
                 _f(r["cost_per_1k"], 4), _f(r["tokens_per_request"], 0), _f(r["cost_per_success"], 6),
                 f"{_f(r['latency_p50_s'], 2)} / {_f(r['latency_p95_s'], 2)} s{_cached(r)}"]
        rows.append(f"<tr><td>{escape(r['model'])}</td>" + "".join(f"<td class=num>{c}</td>" for c in cells) + "</tr>")
    const = data.get("constant")
    bar = f" · constant answer: {escape(constant_text(const))}" if const else ""
    bar += "".join(f"<div class=bad>{escape(w)}</div>" for w in [*echo_warnings(data["rows"]),
                                                                  *failure_notes(data["rows"], data["n_test"])])
    body = [f"<h1>{escape(title)}</h1><div class=muted>{data['n_test']} test cases · * significant gain{bar}</div>",
            f"<div class=card><b>Recommendation:</b> {escape(data['reason'])}" + _curse_html(data.get("selection"))
            + "</div>",
            f"<h2>Models</h2><div class=card><table>{head}{''.join(rows)}</table>{_cached_note(data['rows'])}</div>",
            "<h2>Score vs cost</h2><div class=card>" + scatter_svg(data["rows"]) + "</div>"]
    if any(r.get("load") for r in data["rows"]):
        body.append("<h2>Load test: p95 latency against concurrency</h2><div class=card>" + load_svg(data["rows"])
                    + load_rows_html(data["rows"]) + "</div>")
    matrix = data.get("transfer")
    if matrix:
        models = list(matrix)
        matrix_rows = "".join(
            "<tr><td>" + escape(src) + "</td>" + "".join(
                f"<td class=num style='background:rgba(46,144,250,{(matrix[src].get(dst) or 0) * 0.35:.2f})'>"
                f"{_f(matrix[src].get(dst))}</td>" for dst in models) + "</tr>" for src in models)
        body.append("<h2>Transfer: prompt tuned for (row) scored on (column)</h2><div class=card><table><tr><th></th>"
                    + "".join(f"<th>{escape(m)}</th>" for m in models) + f"</tr>{matrix_rows}</table></div>")
    return page(title, "".join(body), refresh_s=refresh_s, nav=nav)


def write_report(path: Path, out: Path | None = None) -> Path:
    is_compare = (path / "compare.json").exists() or "models" in read_json(path / "config.json")
    html = compare_report(path) if is_compare else run_report(path)
    target = out or path / "report.html"
    write_text_atomic(target, html)
    return target


def write_batch_reports(result: dict[str, Any], directory: Path) -> Path:
    """One report per batch job that has a run, named after the run, in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for row in result["jobs"]:
        if row.get("run_dir") and Path(row["run_dir"], "config.json").exists():
            write_report(Path(row["run_dir"]), directory / f"{Path(row['run_dir']).name}.html")
    return directory
