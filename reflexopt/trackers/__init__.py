"""Experiment trackers: event subscribers that mirror runs into the tools teams already log to (MLflow, W&B).

A tracker is chosen by name (`--track mlflow`), from the entry-point group `reflexopt.trackers`: the built-ins
register there like any plugin. The shared part is here: :class:`Tracker` turns the run's events into tracker
runs (one per optimize run; a parent with one nested run per model for compare, per job for batch), and a
:class:`Backend` (one module per tool, the only place that imports it) writes them.

What lands in a tracker run:
- params: the run's public config, flattened (`budget.max_calls`, `model.id`, ...);
- metrics against the trial number: each trial's val score, the best val so far, paid calls and cost so far;
  trials that workers ran are logged at the end from the run directory, so the coordinator's run has them all;
- the verdict: baseline and best test, the gain, its 95% CI, p, significance (metrics and tags);
- artifacts: the best prompt, the HTML report, the scored cases (evals.jsonl), the summary;
- optionally (MLflow) the best prompt as a new version in the prompt registry.

Every string passes through the same redaction as the run store, so no key or password reaches a tracker. The
tracker's run id is kept in the run directory (`trackers.json`): a resumed run continues the same tracker run.
A tracker that fails part-way is detached by the event bus with one note; the run goes on and loses nothing.
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..config import TrackSpec
from ..errors import ConfigError
from ..models.base import redact

GROUP = "reflexopt.trackers"


class Backend(Protocol):
    """One tracking tool. `run` values are the tool's own run ids (str)."""

    name: str

    def open(self, *, name: str, params: dict[str, str], tags: dict[str, str], resume: str | None,
             parent: str | None) -> str: ...
    def metrics(self, run: str, values: dict[str, float], step: int) -> None: ...
    def tags(self, run: str, values: dict[str, str]) -> None: ...
    def files(self, run: str, paths: Sequence[Path]) -> None: ...
    def register_prompt(self, run: str, name: str, text: str, message: str) -> str | None: ...
    def note(self, run: str, text: str) -> None: ...
    def close(self, run: str, ok: bool) -> None: ...


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """A nested config as `a.b.c -> str` params (None dropped, lists as JSON), redacted."""
    out: dict[str, str] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif data is not None:
        text = json.dumps(data) if isinstance(data, (list, tuple)) else str(data)
        out[prefix.rstrip(".")] = redact(text)[:500]
    return out


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def verdict_line(r: dict[str, Any]) -> str:
    """One line a person reads in the tracker: what the run found on held-out test."""
    try:
        lo, hi = r["delta_ci95"]
        gain = r["best_test"] - r["baseline_test"]
        return (f"test {r['baseline_test']:.3f} -> {r['best_test']:.3f} ({gain:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f}, "
                f"p = {r['p_value']:.4f}): {'a significant gain' if r.get('significant') else 'no significant gain'}; "
                f"best candidate {r.get('best_candidate')} after {r.get('trials')} trials ({r.get('stop_reason')})")
    except (KeyError, TypeError, ValueError):
        return "reflexopt run finished"


def eval_line(s: dict[str, Any]) -> str:
    """One line a person reads in the tracker about an `eval` run: the score and, with `--against`, the change."""
    from ..verdict import p_text

    if s.get("score") is None:
        return "reflexopt eval: nothing was scored"
    line = f"score {s['score']:.3f} on {s['n_scored']} of {s['n_cases']} cases"
    a = s.get("against") or {}
    if a.get("ci95"):
        line += (f"; against {a['prompt']}: {a['old_score']:.3f} -> {a['new_score']:.3f} ({a['delta']:+.3f}, 95% CI "
                 f"{a['ci95'][0]:+.3f} to {a['ci95'][1]:+.3f}, {p_text(a['p_value'])}): {a['verdict']}")
    gate = s.get("gate")
    if gate is not None:
        line += "; gate " + ("passed" if gate["passed"] else "failed: " + "; ".join(gate["reasons"]))
    return line


class _Open:
    """A tracker run that is open, with what it has logged."""

    def __init__(self, run: str, where: Path | None, key: str) -> None:
        self.run, self.where, self.key = run, where, key
        self.steps: set[int] = set()



def judge_metrics(judge: dict[str, Any] | None) -> dict[str, Any]:
    """The judge's record as metrics: self-agreement, known answers judged right, contradictions, parse errors
    (none for a metric)."""
    if not judge:
        return {}
    sa, known = judge.get("self_agreement") or {}, judge.get("known") or {}

    def share(right: int, of: str, per: int = 1) -> float | None:  # of the probes of one kind, the share right
        return right / (per * known[of]) if known.get(of) else None

    return {"judge_self_agreement_sd": sa.get("sd"), "judge_pass_agreement": sa.get("pass_agree"),
            "judge_known_right": share(known.get("references_passed", 0) + known.get("foils_failed", 0), "n", 2),
            "judge_reordered_passed": share(known.get("reordered_passed", 0), "reordered"),
            "judge_near_misses_lower": share(known.get("near_misses_lower", 0), "near_misses"),
            "judge_padded_lower": share(known.get("padded_lower", 0), "padded"),
            "judge_restated_failed": share(known.get("restated_failed", 0), "restated"),
            "judge_contradictions": judge.get("contradictions"),
            "judge_parse_errors": judge.get("parse_errors"), "judge_verdicts": judge.get("verdicts")}

class Tracker:
    """The event subscriber behind `--track NAME`: routes events to tracker runs. Events tagged `model`
    (compare) or `unit` (batch) go to that model's or job's nested run, under the comparison's or batch round's
    parent run."""

    def __init__(self, backend: Backend, *, experiment: str | None = None, register: str | None = None) -> None:
        self.backend, self.experiment, self.register = backend, experiment, register
        self._lock = threading.Lock()
        self._parent: _Open | None = None
        self._runs: dict[str | None, _Open] = {}
        self._closed: set[str] = set()

    # ----------------------------------------------------------------- runs
    def _ids(self, where: Path | None) -> dict[str, str]:
        return _read(where / "trackers.json") if where is not None else {}

    def _open(self, where: Path | None, key: str, *, name: str, params: dict[str, str], tags: dict[str, str],
              parent: _Open | None) -> _Open:
        """Open (or, when `where` names one already, reopen) the tracker run for a run directory."""
        ids = self._ids(where)
        resume = ids.get(f"{self.backend.name}:{key}")
        tags = {k: redact(v)[:500] for k, v in tags.items()}
        run = self.backend.open(name=redact(name), params=params, tags=tags, resume=resume,
                                parent=parent.run if parent else None)
        if where is not None and run != resume:
            from ..paths import write_text_atomic

            write_text_atomic(where / "trackers.json", json.dumps({**ids, f"{self.backend.name}:{key}": run}))
        return _Open(run, where, key)

    def _close(self, o: _Open | None, ok: bool) -> None:
        if o is not None and o.run not in self._closed:
            self._closed.add(o.run)
            self.backend.close(o.run, ok)

    def finish(self, ok: bool) -> None:
        """End every tracker run still open (the command that attached the tracker calls this when it stops:
        a run that ended in an error or an interrupt is marked failed)."""
        with self._lock:
            for o in [*self._runs.values(), self._parent]:
                self._close(o, ok)
            self._runs.clear()
            self._parent = None

    # --------------------------------------------------------------- events
    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        with self._lock:
            self._on(kind, data)

    def _on(self, kind: str, data: dict[str, Any]) -> None:
        key = data.get("model") if data.get("model") is not None else data.get("unit")
        key = None if key is None else str(key)
        if kind == "start" and "compare_id" in data:
            from ..store import runs_root

            where = runs_root() / str(data["compare_id"])
            self._parent = self._open(where, "compare", name=f"compare {data['compare_id']}",
                                      params=flatten(_read(where / "config.json")),
                                      tags={"reflexopt.kind": "compare", "reflexopt.compare_id": data["compare_id"]},
                                      parent=None)
        elif kind == "round":
            where = Path(data["state_dir"])
            self._parent = self._open(where, f"round{data['round']}", name=f"batch {where.name} round {data['round']}",
                                      params={}, tags={"reflexopt.kind": "batch", "reflexopt.round": str(data["round"]),
                                                       "reflexopt.state_dir": str(where)}, parent=None)
        elif kind == "start" and "run_id" in data:
            where = Path(data["run_dir"])
            cfg = _read(where / "config.json")
            name = f"{key} · {data['run_id']}" if key else str(data["run_id"])
            tags = {"reflexopt.kind": "optimize", "reflexopt.run_id": str(data["run_id"]),
                    "reflexopt.run_dir": str(where), "reflexopt.study": str(data.get("study") or "")}
            if key:
                tags["reflexopt.model" if "model" in data else "reflexopt.job"] = key
            parent = self._parent if key else None
            self._runs[key] = self._open(where, "run", name=name, params=flatten(cfg), tags=tags, parent=parent)
        elif kind == "baseline" and key in self._runs:
            self._metrics(self._runs[key], {"val": data["val"], "best_val": data["val"],
                                            "judge_noise": data.get("noise")}, 0)
        elif kind == "trial" and key in self._runs:
            usage = data.get("usage") or {}
            self._metrics(self._runs[key], {"val": data.get("val"), "best_val": data.get("best_val"),
                                            "calls": usage.get("model_calls"), "cost_usd": usage.get("cost_usd"),
                                            "pruned": 1.0 if data.get("state") == "pruned" else 0.0},
                          int(data["n"]))
        elif kind == "done" and "run_id" in data and key in self._runs:
            o = self._runs[key]
            self._verdict(o, data)
            if key is None:  # a plain optimize run; compare and batch close theirs on model_done / unit_done
                self._close(self._runs.pop(key), True)
        elif kind == "model_done" and key in self._runs:
            row = data.get("row") or {}
            o = self._runs.pop(key)
            self._metrics(o, {k: row.get(k) for k in ("baseline", "tuned", "gain", "pass_rate", "cost_per_1k",
                                                      "cost_per_success", "tokens_per_request", "latency_p50_s",
                                                      "latency_p95_s")}, 0)
            self._close(o, not row.get("error"))
        elif kind == "unit_done" and key in self._runs:
            self._close(self._runs.pop(key), data.get("status") != "failed")
        elif kind == "done" and "compare_id" in data and self._parent is not None:
            p = self._parent
            self.backend.tags(p.run, {"reflexopt.recommended": redact(str(data.get("recommended") or "none")),
                                      "reflexopt.reason": redact(str(data.get("reason") or ""))[:500]})
            self._artifacts(p, ["compare.json"], report=True)
            self._close(p, True)
            self._parent = None
        elif kind == "eval_done":
            self._eval(data)
        elif kind == "batch_done" and self._parent is not None:
            self.backend.tags(self._parent.run, {"reflexopt.complete": str(data.get("complete")),
                                                 "reflexopt.regressions": json.dumps(data.get("regressions") or [])})
            self._close(self._parent, not data.get("failed"))
            self._parent = None

    def _metrics(self, o: _Open, values: dict[str, Any], step: int) -> None:
        clean = {k: v for k, v in ((k, _num(v)) for k, v in values.items()) if v is not None}
        if clean:
            self.backend.metrics(o.run, clean, step)
            o.steps.add(step)

    def _verdict(self, o: _Open, result: dict[str, Any]) -> None:
        assert o.where is not None
        # trials run by other processes (workers) reach the coordinator only through the study: log them now
        from ..pool import steps_text
        from ..store import RunStore

        for c in RunStore(o.where).candidates():
            n = c.get("trial")
            if isinstance(n, int) and n not in o.steps and c.get("val_mean") is not None:
                self._metrics(o, {"val": c["val_mean"], "pruned": 1.0 if c.get("state") == "pruned" else 0.0}, n)
        lo, hi = result.get("delta_ci95") or (None, None)
        gain = (result["best_test"] - result["baseline_test"]
                if _num(result.get("best_test")) is not None and _num(result.get("baseline_test")) is not None
                else None)
        self._metrics(o, {"baseline_test": result.get("baseline_test"), "best_test": result.get("best_test"),
                          "test_gain": gain, "test_gain_ci95_low": lo, "test_gain_ci95_high": hi,
                          "p_value": result.get("p_value"), "significant": 1.0 if result.get("significant") else 0.0,
                          "baseline_val_final": result.get("baseline_val"), "best_val_final": result.get("best_val"),
                          "trials": result.get("trials"), "model_calls": result.get("model_calls"),
                          "total_cost_usd": result.get("cost_usd"),
                          "distinct_candidates": result.get("distinct_candidates"),
                          **judge_metrics(result.get("judge"))}, max([0, *o.steps]))
        self.backend.tags(o.run, {"reflexopt.verdict": "significant gain" if result.get("significant") else
                                  "no significant gain", "reflexopt.best_candidate": str(result.get("best_candidate")),
                                  "reflexopt.stop_reason": redact(str(result.get("stop_reason")))[:500],
                                  **({"reflexopt.steps_to_best": steps_text(result["lineage"])[:500]}
                                     if result.get("lineage") else {})})
        self.backend.note(o.run, redact(verdict_line(result)))
        self._artifacts(o, ["best.md", "summary.json", "evals.jsonl"], report=True)
        if self.register and result.get("best_prompt"):
            version = self.backend.register_prompt(
                o.run, self.register, redact(str(result["best_prompt"])),
                f"reflexopt run {result.get('run_id')}: test {result.get('baseline_test')} -> "
                f"{result.get('best_test')}")
            if version:
                self.backend.tags(o.run, {"reflexopt.registered_prompt": version})

    def _eval(self, data: dict[str, Any]) -> None:
        """An `eval` run is one tracker run: its settings, score and costs, the judge's record, with `--against`
        the change and its paired test, the gate, and as artifacts the scored cases, the summary and the
        prompts."""
        s = data["summary"]
        a, gate = s.get("against"), s.get("gate")
        tags = {"reflexopt.kind": "eval"}
        if a:
            tags.update({"reflexopt.against": str(a["prompt"]), "reflexopt.change": str(a["verdict"])})
        if gate is not None:
            tags["reflexopt.gate"] = "passed" if gate["passed"] else "failed: " + "; ".join(gate["reasons"])
        o = self._open(None, "eval", name=data["name"], params=flatten(data["config"]), tags=tags, parent=None)
        lo, hi = s.get("ci95") or (None, None)
        money, labels = s.get("money") or {}, s.get("labels") or {}
        values = {**{k: s.get(k) for k in ("score", "pass_rate", "n_cases", "n_scored", "task_failures", "errors",
                                           "model_calls", "cached_calls", "cost_usd", "latency_p50_s",
                                           "latency_p95_s")},
                  "score_ci95_low": lo, "score_ci95_high": hi, "macro_f1": labels.get("macro_f1"),
                  "cost_per_1k": money.get("cost_per_1k"), "cost_per_success": money.get("cost_per_success"),
                  **judge_metrics(s.get("judge"))}
        if a and a.get("ci95"):
            values.update({"against_score": a["old_score"], "change": a["delta"], "change_ci95_low": a["ci95"][0],
                           "change_ci95_high": a["ci95"][1], "change_p_value": a["p_value"],
                           "cases_better": a["better_cases"], "cases_worse": a["worse_cases"]})
        self._metrics(o, values, 0)
        self.backend.note(o.run, redact(eval_line(s)))
        self._files(o, {"cases.jsonl": "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in data["cases"]),
                        "summary.json": json.dumps(s, indent=2, ensure_ascii=False), **data["prompts"]})
        self._close(o, True)

    def _artifacts(self, o: _Open, names: Iterable[str], *, report: bool) -> None:
        """Redacted copies of the run's files (and its HTML report), logged as artifacts."""
        assert o.where is not None
        texts = {n: (o.where / n).read_text(encoding="utf-8", errors="replace") for n in names
                 if (o.where / n).is_file()}
        if report:
            from ..report import compare_report, run_report

            texts["report.html"] = compare_report(o.where) if (o.where / "compare.json").exists() \
                else run_report(o.where)
        self._files(o, texts)

    def _files(self, o: _Open, texts: dict[str, str]) -> None:
        """Texts logged as artifacts (name -> text), each redacted first."""
        if not texts:
            return
        with tempfile.TemporaryDirectory(prefix="reflexopt-track-") as tmp:
            out = []
            for n, text in texts.items():
                (Path(tmp) / n).write_text(redact(text), encoding="utf-8")
                out.append(Path(tmp) / n)
            self.backend.files(o.run, out)


def finish_all(trackers: Iterable[Tracker], ok: bool) -> None:
    """End the trackers' open runs. A tracker that fails here has nothing left to lose: it is not reported."""
    for t in trackers:
        try:
            t.finish(ok)
        except Exception:  # noqa: BLE001, S110 - a broken tracker never turns a finished run into a failed one
            pass


def names() -> list[str]:
    from ..plugins import names as group_names

    return group_names(GROUP)


def make_trackers(spec: TrackSpec) -> list[Tracker]:
    """The trackers `--track` names, each checked (its extra installed, its server reachable) before any model
    call: a problem is one ConfigError naming the fix."""
    from ..plugins import load

    experiment, register = spec.experiment, spec.prompt_name
    out: list[Tracker] = []
    for name in dict.fromkeys(spec.trackers):
        factory = load(GROUP, name, what="tracker", fix="choose one of: {names}")
        out.append(Tracker(factory(experiment=experiment), experiment=experiment, register=register))
    if register and not any(hasattr(t.backend, "registry") for t in out):
        raise ConfigError("--register-prompt needs a tracker with a prompt registry",
                          fix="add --track mlflow, or drop --register-prompt")
    return out
