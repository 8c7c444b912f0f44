"""The one benchmark runner: every table in docs/benchmarks/ is a spec file run by this script.

A spec (TOML, next to the table it makes) names the sets, the arms, the budgets and the seeds:

    title = "..."                      # the table's heading
    about = "..."                      # what it measures (markdown, printed under the heading)
    model = "local/smollm2"            # task model (and reasoning model unless an arm says otherwise)
    args = ["--metric", "contains"]    # given to every reflexopt command
    seeds = [100, 101, 102]
    budgets = [500, 1500]
    reference = "reflex"               # the arm every other arm is compared with, seed by seed
    llm_steps = true                   # optional: a column counting the steps to each returned prompt (its
                                       # lineage) that LLM rewrites made
    check = ["exact"]                  # optional: reference metrics that score each run's recorded test outputs
                                       # (starting and returned prompt; no calls): a check on a judge's verdicts
    screen = true                      # optional, label sets: a set counts for the bar only where, on every
                                       # seed, the best hand-written prompt beats every constant answer on val

    [[sets]]
    name = "tweet_emotion"
    data = "scripts/data/tweet_emotion.jsonl"          # paths relative to the repository root
    prompt = "scripts/handwritten/tweet_emotion/vague.md"
    handwritten = "scripts/handwritten/tweet_emotion"  # optional: *.md scored by the `handwritten` arm
    holdout = "scripts/data/x_rest.jsonl"   # optional, development tables only: rows outside the set, on which
                                            # each run's returned prompt and its starting prompt are also scored

    [[arms]]
    name = "reflex"                    # `reflexopt optimize DATA PROMPT -m MODEL --seed S --max-calls B ...`
    args = []
    [[arms]]
    name = "cost"
    args = ["--objective", "cost"]
    home = "score"                     # share that arm's response cache (same search, answers reused)
    [[arms]]
    name = "gepa"
    args = ["--strategy", "gepa"]
    seeds = [100]                      # optional: this arm runs on these seeds only (`sets = [...]`: these sets)
    [[arms]]
    name = "hand-written"
    kind = "handwritten"               # `reflexopt eval` of each hand-written prompt on the seed's val and test

A row is one (set, arm, budget, seed). Rows already in the jsonl are skipped, so a table can span sessions, and
several runners on one jsonl (one per core) share its rows: each takes the next row no runner holds (Claims), so
    taskset -c 0 python scripts/bench.py SPEC & taskset -c 1 python scripts/bench.py SPEC
runs a table on two cores, an arm that shares another's home (`home`) after that arm's row.
Every row carries the commit it ran at (refused on a tree with uncommitted changes to reflexopt/, unless
--allow-dirty, and then marked dirty) and the exact command. The markdown shows, per set and budget, each arm's
test mean ± SD over seeds, its val mean, calls and prompt tokens, and the seeds on which it beats the reference
arm; its header lists every commit in the jsonl, so a table that mixes commits says so.

    python scripts/bench.py docs/benchmarks/heldout_labels.toml            # run what is missing, write the .md
    python scripts/bench.py docs/benchmarks/heldout_labels.toml --render   # only rewrite the .md
    python scripts/bench.py SPEC --sets tweet_irony --arms reflex --budgets 500 --seeds 100   # a subset
    python scripts/bench.py SPEC --code /path/to/checkout --jsonl /tmp/before.jsonl   # another version
    python scripts/bench.py SPEC --keep-runs docs/benchmarks/runs/SPEC_NAME   # archive each row's run there

The work folder (--work, under the temporary directory) holds each run's home: its response cache and run folder.
It does not outlive the machine; `--keep-runs DIR` archives each run's candidates, per-case scores and events
(no cache, a few tens of KB each) so that a later probe can replay or rescore them (path_holdout.py --kept DIR).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=cwd, check=True).stdout.strip()


def code_version(code: Path, allow_dirty: bool) -> tuple[str, bool]:
    """The commit of the checkout being measured and whether its reflexopt/ has uncommitted changes."""
    dirty = bool(git("status", "--porcelain", "--", "reflexopt", "pyproject.toml", cwd=code))
    if dirty and not allow_dirty:
        raise SystemExit(f"{code}: reflexopt/ has uncommitted changes; commit them (a row names the commit it "
                         "ran at) or pass --allow-dirty for a development run")
    return git("rev-parse", "--short", "HEAD", cwd=code), dirty


def machine() -> dict[str, Any]:
    """What a row's numbers depend on beyond the commit: the CPU, the cores the run may use, the embedded model's
    llama.cpp build and threads. The same prompt, cases and code gave 1 to 3 answers of 80 otherwise on two
    machines (docs/benchmarks/README.md), so a table says when its rows come from more than one."""
    from importlib import metadata

    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    field = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in info) if v}
    cpu = field.get("model name") or platform.processor() or platform.machine()
    # llama.cpp picks its kernels by the CPU's instruction sets: two CPUs of one name may differ there
    flags = hashlib.sha256(field.get("flags", "").encode()).hexdigest()[:8] if "flags" in field else None
    try:
        llama = metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        llama = None
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpu": cpu, "cpu_flags": flags, "cores": cores, "llama_cpp_python": llama,
            "threads": os.environ.get("REFLEXOPT_LOCAL_THREADS")}


def machine_name(m: dict[str, Any]) -> str:
    return (f"{m.get('cpu')} (flags {m.get('cpu_flags') or '-'}), llama-cpp-python "
            f"{m.get('llama_cpp_python') or '-'}")


def in_checkout(code: Path, snippet: str, *argv: str) -> str:
    """What a Python snippet prints when run against the reflexopt of the checkout `code` (the version measured)."""
    return subprocess.run([sys.executable, "-c", snippet, *argv], capture_output=True, text=True, check=True,
                          cwd=code, env={**os.environ, "PYTHONPATH": str(code)}).stdout


def cli_options(code: Path) -> dict[str, dict[str, bool]]:
    """The long options of `eval` and `optimize` in the checkout `code`, each with whether it is a flag (takes no
    value), read from its command line as cli/config.py reads them for a config file."""
    return json.loads(in_checkout(code, (
        "import json, typer.main; from reflexopt.cli import app; g = typer.main.get_command(app).commands; "
        "print(json.dumps({c: {o: p.is_flag for p in g[c].params for o in p.opts if o.startswith('--')} "
        "for c in ('eval', 'optimize')}))")))


def eval_args(args: list[str], options: dict[str, dict[str, bool]]) -> list[str]:
    """The spec's `args` as `reflexopt eval` takes them (for the hand-written and holdout rows): the options only
    `optimize` takes are left out, with their values (`options`: cli_options of the version measured). They do not
    change how a prompt is scored, and eval refuses them."""
    out, skip = [], False
    for a in args:
        name = a.split("=", 1)[0]
        if skip:
            skip = False
        elif not name.startswith("--") or name in options["eval"]:
            out.append(a)
        else:
            skip = "=" not in a and not options["optimize"].get(name, False)
    return out


def load_spec(path: Path) -> dict[str, Any]:
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise SystemExit(f"{path}: {e}") from None
    for key in ("title", "model", "seeds", "budgets", "sets", "arms"):
        if key not in spec:
            raise SystemExit(f"{path}: missing `{key}` (see the spec format in scripts/bench.py)")
    names = [a["name"] for a in spec["arms"]]
    for arm in spec["arms"]:
        if arm.get("home") and arm["home"] not in names[: names.index(arm["name"])]:
            raise SystemExit(f"{path}: arm {arm['name']!r} shares the home of {arm['home']!r}, which must be an "
                             "arm listed before it")
    if spec.get("screen") and not any(a.get("kind") == "handwritten" for a in spec["arms"]):
        raise SystemExit(f"{path}: `screen` reads the hand-written arm's rows; add an arm with kind = \"handwritten\"")
    spec.setdefault("reference", names[0])
    return dict(spec)


class Runner:
    def __init__(self, spec: dict[str, Any], args: argparse.Namespace) -> None:
        self.spec = spec
        self.code = Path(args.code).resolve() if args.code else ROOT
        self.work = Path(args.work)
        self.commit, self.dirty = code_version(self.code, args.allow_dirty)
        self.machine = machine()

    @functools.cached_property
    def options(self) -> dict[str, dict[str, bool]]:
        return cli_options(self.code)

    def reflexopt(self, argv: list[str], home: Path) -> tuple[dict[str, Any], float]:
        env = {**os.environ, "REFLEXOPT_HOME": str(home), "PYTHONPATH": str(self.code)}
        t0 = time.monotonic()
        # run inside the checkout: `python -m` puts the working directory first on sys.path
        p = subprocess.run([sys.executable, "-m", "reflexopt", *argv], capture_output=True, text=True, env=env,
                           cwd=self.code)
        if p.returncode != 0:
            raise SystemExit(f"failed: reflexopt {shlex.join(argv)}\n{p.stderr[-3000:]}")
        return json.loads(p.stdout), time.monotonic() - t0

    @staticmethod
    def shown(argv: list[str]) -> str:
        """The command as a reader can rerun it from the repository root."""
        return "reflexopt " + shlex.join(argv).replace(str(ROOT) + "/", "")

    def row(self, s: dict[str, Any], arm: dict[str, Any], budget: int, seed: int) -> dict[str, Any]:
        base = {"set": s["name"], "arm": arm["name"], "budget": budget, "seed": seed, "commit": self.commit,
                "dirty": self.dirty, "date": time.strftime("%Y-%m-%d"), "machine": self.machine}
        if arm.get("kind") == "handwritten":
            return {**base, **self.handwritten(s, seed)}
        home_arm = arm.get("home") or arm["name"]
        # a fresh response cache per run and per version measured (arms with `home` share one on purpose)
        # the returned prompt too, so the runs of two versions (--code) may go on at once
        folder = self.work / (self.commit + ("-dirty" if self.dirty else ""))
        folder.mkdir(parents=True, exist_ok=True)
        home = folder / f"home-{s['name']}-{home_arm}-{budget}-{seed}"
        best = folder / f"{s['name']}-{arm['name']}-{budget}-{seed}.best.md"
        argv = ["optimize", str(ROOT / s["data"]), str(ROOT / s["prompt"]), "-m", self.spec["model"],
                "--seed", str(seed), "--max-calls", str(budget), *self.spec.get("args", []), *arm.get("args", []),
                "--json", "-o", str(best)]
        res, wall = self.reflexopt(argv, home)
        summary = json.loads(Path(res["run_dir"], "summary.json").read_text(encoding="utf-8"))
        chosen: dict[str, Any] = next((x for x in summary.get("frontier") or [] if x.get("chosen")), {})
        cands = Path(res["run_dir"], "candidates.jsonl")
        ops = {c["id"]: c.get("operator") for c in (json.loads(x) for x in (
            cands.read_text(encoding="utf-8").splitlines() if cands.exists() else []) if x.strip())}
        row = {**base, "command": self.shown(argv[:-2]), "baseline_test": res["baseline_test"],
                "best_test": res["best_test"], "baseline_val": res.get("baseline_val"),
                "best_val": res.get("best_val"), "p_value": res.get("p_value"), "calls": res["model_calls"],
                # answers in the run's cache before it started (a stopped attempt's, or a shared home's): they count
                # against --max-calls as the calls they replace, but are not in "calls" (repeats inside one run
                # count for neither)
                "reused_calls": (summary.get("usage") or {}).get("budget_calls_used", res["model_calls"])
                - res["model_calls"],
                "trials": res.get("trials"), "stop": res.get("stop_reason"), "operators": res.get("operators"),
                "best_candidate": res.get("best_candidate"), "prompt_tokens": chosen.get("prompt_tokens"),
                "chosen_by": res.get("chosen_by"), "test_labels": res.get("test_labels"),
                # the operators of the accepted steps (the successive bests), in order
                "accepted": [ops.get(i, "?") for i in summary.get("accepted_path") or [] if i != "baseline"],
                "lineage": summary["lineage"] if "lineage" in summary else lineage(
                    Path(res["run_dir"]), res.get("best_candidate"), summary.get("accepted_path")),
                "wall_s": round(wall, 1), "best_prompt": best.read_text(encoding="utf-8")}
        judge = summary.get("judge")
        if judge:  # how far the run's judge can be trusted, beside its scores
            row["judge"] = {**{k: judge.get(k) for k in ("known", "verdicts", "copies", "matches", "contradictions",
                                                           "parse_errors")},
                            "self_agreement_sd": (judge.get("self_agreement") or {}).get("sd")}
        if s.get("holdout"):
            # the returned prompt in the run's home, the starting prompt in one home per set and version (the same
            # for every seed and arm, so it is paid for once)
            shared = home.parent / f"home-holdout-{s['name']}"
            row["holdout"] = self.holdout(s, {"start": (ROOT / s["prompt"], shared), "best": (best, home)})
        if self.spec.get("check"):
            row["check"] = self.check(Path(res["run_dir"]))
        return row

    def check(self, run_dir: Path) -> dict[str, dict[str, float]]:
        """The spec's `check` metrics on the test outputs the run recorded for its starting and returned prompts
        (the ones its verdict scored; no calls), by the version measured: {metric: {"start": mean, "best": mean}}.
        A judge that rates an answer well which the reference metric does not shows up here."""
        # scored as `--metric M` scores (reflexopt.scoring.metric_scorer: label sets, arguments, plug-ins), the
        # cases rebuilt from what the run recorded
        snippet = """if True:
            import asyncio, json, sys
            from pathlib import Path
            from reflexopt.data import Case
            from reflexopt.scoring import metric_scorer
            from reflexopt.store import RunStore
            store = RunStore(Path(sys.argv[1]))
            summary, evals = store.summary(), store.evals()
            runs = {name: list(store.results(summary[key], "test", evals).values())
                    for name, key in (("start", "baseline_prompt"), ("best", "best_prompt"))}
            cases = {r.case_id: Case(r.case_id, r.input, r.ideal) for rs in runs.values() for r in rs}
            async def mean(scorer, rs):
                vs = [(await scorer.score(cases[r.case_id], r.output or "")).value for r in rs]
                vs = [v for v in vs if v is not None]
                return round(sum(vs) / len(vs), 4) if vs else None
            out = {}
            for m in sys.argv[2:]:
                scorer = metric_scorer(m, list(cases.values()))
                out[m] = {name: asyncio.run(mean(scorer, rs)) for name, rs in runs.items()}
            print(json.dumps(out))"""
        return json.loads(in_checkout(self.code, snippet, str(run_dir), *self.spec["check"]))

    def holdout(self, s: dict[str, Any], prompts: dict[str, tuple[Path, Path]]) -> dict[str, Any]:
        """Prompts scored on the set's `holdout` rows, which no split of the set contains: {name: (prompt, home)}
        gives each prompt and the home (response cache) it is scored in; {name: score, n_name: cases scored,
        commands: [...]}."""
        out: dict[str, Any] = {"commands": []}
        for name, (prompt, where) in prompts.items():
            argv = ["eval", str(ROOT / s["holdout"]), str(prompt), "-m", self.spec["model"],
                    *eval_args(self.spec.get("args", []), self.options), "--json"]
            res, _ = self.reflexopt(argv, where)
            out[name], out[f"n_{name}"] = res["score"], res.get("n_scored", res.get("n"))
            out["commands"].append(self.shown(argv))
        return out

    def handwritten(self, s: dict[str, Any], seed: int) -> dict[str, Any]:
        """Each hand-written prompt scored with `reflexopt eval` on the val and test cases of `optimize --seed`."""
        files = {part: self.split_file(s, seed, part) for part in ("val", "test")}
        scores: dict[str, dict[str, float]] = {}
        f1: dict[str, Any] = {}
        commands = []
        for p in sorted((ROOT / s["handwritten"]).glob("[0-9]*.md")):
            scores[p.name] = {}
            for part, f in files.items():
                argv = ["eval", str(f), str(p), "-m", self.spec["model"],
                        *eval_args(self.spec.get("args", []), self.options), "--json"]
                res, _ = self.reflexopt(argv, self.work / "home-eval")
                scores[p.name][part] = res["score"]
                if part == "test" and res.get("labels"):
                    f1[p.name] = res["labels"]
                commands.append(self.shown(argv))
        if not scores:
            raise SystemExit(f"{s['handwritten']}: no hand-written prompts (1.md, 2.md, ...)")
        by_val = max(scores, key=lambda k: scores[k]["val"])  # chosen the way a user would: on val
        # a development spec: the chosen prompt on the rows no split contains, as a run's returned prompt
        held = self.holdout(s, {"best": (ROOT / s["handwritten"] / by_val, self.work / "home-eval")}) \
            if s.get("holdout") else None
        return {"command": " ; ".join(commands), "handwritten": scores, "best_test": scores[by_val]["test"],
                "best_val": scores[by_val]["val"], "best_candidate": by_val,
                "max_test": max(v["test"] for v in scores.values()), "calls": 0,
                "test_labels": {"best": f1[by_val]} if by_val in f1 else None, **({"holdout": held} if held else {})}

    def split_file(self, s: dict[str, Any], seed: int, part: str) -> Path:
        """The rows of one part of the split `optimize --seed S` makes (the default split, or the balanced one
        when the spec's args say `--balanced`), as a dataset file."""
        even = _balanced(self.spec)
        out = self.work / f"{s['name']}-{seed}-{part}{'-balanced' if even else ''}.jsonl"
        code = ("import json,sys; from reflexopt.data import load_dataset, split; "
                "d=sys.argv[1]; rows=[l for l in open(d, encoding='utf-8').read().splitlines() if l.strip()]; "
                "cs=load_dataset(d); by={c.line: r for c, r in zip(cs, rows)}; "
                "kw={'balanced': True} if sys.argv[4] == '1' else {}; "
                "print(''.join(by[c.line] + chr(10) for c in getattr(split(cs, None, seed=int(sys.argv[2]), **kw), "
                "sys.argv[3])), end='')")
        out.write_text(in_checkout(self.code, code, str(ROOT / s["data"]), str(seed), part, str(int(even))),
                       encoding="utf-8")
        return out


def _balanced(spec: dict[str, Any]) -> bool:
    """Whether the spec's runs split with `--balanced` (val and test with as many cases of each label)."""
    return "--balanced" in spec.get("args", [])


def _used(r: dict[str, Any]) -> int:
    """The calls a run used of its budget: paid, plus the answers it found in its cache before it started (what a
    run on a cold cache would have paid for)."""
    return int(r["calls"]) + int(r.get("reused_calls") or 0)


def fell(r: dict[str, Any]) -> dict[str, Any] | None:
    """The row's returned prompt's collapse on test (label, answers, of: reflexopt's own check, in the row's test
    label report), or None."""
    return ((r.get("test_labels") or {}).get("best") or {}).get("collapsed")


def collapsed(rs: list[dict[str, Any]]) -> int | None:
    """On how many of these runs the returned prompt answered (nearly) one label to every test case while the
    references did not; None when the rows have no label report (free text)."""
    if not rs or not all(r.get("test_labels") for r in rs):
        return None
    return sum(fell(r) is not None for r in rs)


def lineage(run_dir: Path, best: str | None, accepted: list[str] | None) -> list[dict[str, Any]]:
    """The steps that made a run's returned prompt as reflexopt's summary records them (`lineage`), rebuilt from the
    run's candidates.jsonl for runs of commits that did not record it."""
    from reflexopt.pool import lineage as chain_of
    from reflexopt.pool import step

    path = run_dir / "candidates.jsonl"
    cands = {c["id"]: c for c in (json.loads(x) for x in (
        path.read_text(encoding="utf-8").splitlines() if path.exists() else []) if x.strip())}
    return [step(c["id"], c.get("operator"), c["id"] in (accepted or []), c.get("val_mean"))
            for c in chain_of(cands, best or "", lambda c: c.get("parent")) if c["id"] != "baseline"]


# what a later analysis of a run reads (its candidates, their per-case scores, its events), without the response
# cache or Optuna's study, which the candidates and their settings make up for
KEPT = ("config.json", "summary.json", "candidates.jsonl", "evals.jsonl", "events.jsonl", "candidates")


def home_of(spec: dict[str, Any], r: dict[str, Any], work: Path) -> Path:
    """The bench home (REFLEXOPT_HOME) a row's run had: arms with `home` share one."""
    arm = next((a for a in spec["arms"] if a["name"] == r["arm"]), {})
    return work / (r["commit"] + ("-dirty" if r.get("dirty") else "")) / \
        f"home-{r['set']}-{arm.get('home') or r['arm']}-{r['budget']}-{r['seed']}"


def keep_run(home: Path, dest: Path) -> Path | None:
    """Archive the runs of a bench home into `dest` (`<home name>.tar.gz`, the same bytes for the same files, so a
    committed archive changes only when its runs do): the files of KEPT from each run folder. The work folder is
    temporary; an archive committed beside a table lets a later probe (scripts/path_holdout.py, gate_replay.py)
    replay or rescore a run's candidates on another machine. None when the home holds no finished run."""
    import gzip
    import io
    import tarfile

    runs = sorted(p.parent for p in home.glob("runs/*/summary.json"))
    if not runs:
        return None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for run in runs:
            files = sorted(f for name in KEPT for f in ([run / name] if (run / name).is_file()
                                                        else sorted((run / name).glob("*")))
                           if f.is_file())
            for f in files:
                info = tarfile.TarInfo(str(Path(home.name) / f.relative_to(home)))
                data = f.read_bytes()
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{home.name}.tar.gz"
    packed = gzip.compress(buf.getvalue(), compresslevel=9, mtime=0)
    if not out.exists() or out.read_bytes() != packed:
        out.write_bytes(packed)
    return out


def restore_run(home: Path, kept: Path) -> bool:
    """Unpack a home's archive (keep_run) from `kept` into `home`'s folder when the home is not there (another
    machine, or a cleared work folder): its runs come back without their response cache. Whether it is there now."""
    import tarfile

    archive = kept / f"{home.name}.tar.gz"
    if not home.exists() and archive.exists():
        with tarfile.open(archive) as tar:
            tar.extractall(home.parent, filter="data")
    return home.exists()


def keep_runs(spec: dict[str, Any], rows: list[dict[str, Any]], work: Path, dest: Path) -> int:
    """Archive (keep_run) the run of every row whose home is still in `work`; how many archives were written or
    found current."""
    homes = {home_of(spec, r, work) for r in rows if r.get("calls")}  # a hand-written row makes no run
    return sum(keep_run(h, dest) is not None for h in sorted(homes) if h.is_dir())


def add_lineage(spec: dict[str, Any], rows: list[dict[str, Any]], work: Path) -> int:
    """Give rows recorded before the lineage was (and whose runs are still in `work`) their lineage, from the run
    folder whose summary returned the row's candidate with the row's test score. How many rows got one."""
    arms = {a["name"] for a in spec["arms"]}
    n = 0
    for r in rows:
        if "lineage" in r or r["arm"] not in arms or "best_candidate" not in r:
            continue
        home = home_of(spec, r, work)
        for summary in sorted(home.glob("runs/*/summary.json"), reverse=True):
            got = json.loads(summary.read_text(encoding="utf-8"))
            if got.get("best_candidate") == r["best_candidate"] and abs(got["best_test"] - r["best_test"]) < 1e-4:
                r["lineage"] = lineage(summary.parent, got["best_candidate"], got.get("accepted_path"))
                n += 1
                break
    return n


def steps_of(r: dict[str, Any]) -> list[str]:
    """The operators of a row's steps to its returned prompt: its lineage, or (rows made before it was recorded)
    its accepted steps."""
    return [st["operator"] for st in r["lineage"]] if "lineage" in r else list(r.get("accepted") or [])


def llm_steps(rs: list[dict[str, Any]]) -> str:
    """How many of the steps to these rows' returned prompts (their lineage) came from LLM rewrites ("-" when a
    row's steps are not reflex operators: a DSPy strategy's one step is its whole compile)."""
    from reflexopt.operators import LLM_OPERATORS, NAMES

    steps = [op for r in rs for op in steps_of(r)]
    if any(op not in NAMES for op in steps):
        return "-"
    return f"{sum(op in LLM_OPERATORS for op in steps)} of {len(steps)}"


def _ms(xs: list[float]) -> str:
    if not xs:
        return "-"
    if len(xs) == 1:  # no spread to show: "± 0.000" would claim one
        return f"{xs[0]:.3f} (1 seed)"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def constant_answer(s: dict[str, Any], seeds: list[int], metric: str = "contains",
                    balanced: bool = False) -> dict[int, tuple[str, float, float]] | None:
    """On a label set, per seed: the train split's most common label, and the test score and macro-F1 of a
    prompt that answers it whatever the case (reflexopt.evaluate.constant_answer, the optimize summary's own bar,
    scored by `metric`). A model that cannot tell the cases apart gets this by collapsing onto that label, so a
    tuned prompt shows skill only above it. None on free text."""
    import asyncio

    sys.path.insert(0, str(ROOT))
    from reflexopt.config import ScorerSpec
    from reflexopt.data import is_categorical, load_dataset, split
    from reflexopt.evaluate import constant_with
    from reflexopt.metrics import label_report

    cases = load_dataset(ROOT / s["data"])
    if not is_categorical(cases):
        return None
    labels = sorted({c.ideal or "" for c in cases})
    out = {}
    for seed in seeds:
        parts = split(cases, None, seed=seed, balanced=balanced)
        c = asyncio.run(constant_with(ScorerSpec(metric=metric), cases, parts.train, parts.test))
        if c is None:
            return None
        f1 = label_report([c["label"]] * len(parts.test), [x.ideal for x in parts.test], labels)
        out[seed] = (str(c["label"]), c["score"], f1["macro_f1"] if f1 else 0.0)
    return out


def holdout_constant(s: dict[str, Any], seed: int, metric: str = "contains",
                     balanced: bool = False) -> float | None:
    """On a label set with `holdout` rows: the score there of the constant answer of `seed` (its train split's most
    common label, as constant_answer, from the split the runs make). None on free text or without held-back rows."""
    import asyncio

    sys.path.insert(0, str(ROOT))
    from reflexopt.config import ScorerSpec
    from reflexopt.data import is_categorical, load_dataset, split
    from reflexopt.evaluate import constant_with

    if not s.get("holdout"):
        return None
    cases = load_dataset(ROOT / s["data"])
    if not is_categorical(cases):
        return None
    train = split(cases, None, seed=seed, balanced=balanced).train
    c = asyncio.run(constant_with(ScorerSpec(metric=metric), cases, train, load_dataset(ROOT / s["holdout"])))
    return None if c is None else float(c["score"])


def val_constant(s: dict[str, Any], seeds: list[int], balanced: bool = False) -> dict[int, float] | None:
    """On a label set, per seed: the share of the seed's val split held by its most common label, the most any
    constant answer can score on val (the screen's bar). None on free text."""
    sys.path.insert(0, str(ROOT))
    from reflexopt.data import is_categorical, load_dataset, split

    cases = load_dataset(ROOT / s["data"])
    if not is_categorical(cases):
        return None
    out = {}
    for seed in seeds:
        val = [c.ideal or "" for c in split(cases, None, seed=seed, balanced=balanced).val]
        out[seed] = max(val.count(x) for x in set(val)) / len(val)
    return out


def screen(spec: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """The spec's screen (`screen = true`), fixed before its runs: a set counts for the bar only if, on every seed,
    the best hand-written prompt scores above every constant answer on val, i.e. a plain prompt puts the task
    within the task model's reach. It reads the hand-written rows only."""
    hand = next((a["name"] for a in spec["arms"] if a.get("kind") == "handwritten"), None)
    if not spec.get("screen") or hand is None:
        return []
    out = ["", "## Screen", "", "Fixed before any run: a set counts for the bar only if, on every seed, the best "
           "hand-written prompt's val score is above the val share of the val split's most common label (the most a "
           "constant answer can score there).", "",
           "| set | seed | best hand-written prompt on val | constant answer on val (at most) | above |",
           "|---|---|---|---|---|"]
    for s in spec["sets"]:
        verdicts = []
        bars = val_constant(s, spec["seeds"], _balanced(spec)) or {}  # the dataset read once per set
        for seed in spec["seeds"]:
            r = next((r for r in rows if r["set"] == s["name"] and r["arm"] == hand and r["seed"] == seed), None)
            bar = bars.get(seed)
            if r is None or bar is None or r.get("best_val") is None:
                verdicts.append(None)
                continue
            above = r["best_val"] > bar
            verdicts.append(above)
            out.append(f"| {s['name']} | {seed} | {r['best_val']:.3f} | {bar:.3f} | {'yes' if above else 'no'} |")
        verdict = ("not yet screened" if None in verdicts else
                   "**counts** for the bar" if all(verdicts) else "does **not** count for the bar")
        out.append(f"| {s['name']} | all | | | {verdict} |")
    return out


def _check(r: dict[str, Any], m: str) -> dict[str, Any]:
    """A row's scores by the check metric `m` ({} for a row made before the spec asked for it)."""
    return (r.get("check") or {}).get(m) or {}


def _checked(rs: list[dict[str, Any]], m: str) -> str:
    """The returned prompts' test score by the check metric `m` over these rows ("-" when a row has none)."""
    xs = [_check(r, m).get("best") for r in rs]
    return _ms([float(x) for x in xs]) if xs and None not in xs else "-"


def _check_pair(r: dict[str, Any], m: str) -> str:
    c = _check(r, m)
    return f"{c['start']:.3f} → {c['best']:.3f}" if c.get("start") is not None and c.get("best") is not None else "-"


def _judged(r: dict[str, Any]) -> str:
    """A row's judge: its verdicts on the known answers right (a warning marked) and its self-agreement SD."""
    j = r.get("judge") or {}
    k = j.get("known") or {}
    known = (f"{k['references_passed'] + k['foils_failed']} of {2 * k['n']}" + (" (warned)" if k.get("warning")
                                                                                  else "")) if k.get("n") else "-"
    sd = f"{j['self_agreement_sd']:.3f}" if j.get("self_agreement_sd") is not None else "-"
    return f"{known} · {sd}"


def _metric(spec: dict[str, Any]) -> str:
    """The metric the spec's common arguments name (`--metric NAME`), else contains."""
    args = list(spec.get("args", []))
    return args[args.index("--metric") + 1] if "--metric" in args[:-1] else "contains"


def render(spec: dict[str, Any], rows: list[dict[str, Any]], spec_path: Path) -> str:
    commits = sorted({r["commit"] + (" (uncommitted changes)" if r.get("dirty") else "") for r in rows})
    versions = list(dict.fromkeys(r["commit"] for r in rows))  # in the order the rows were made
    machines = sorted({machine_name(r["machine"]) for r in rows if r.get("machine")})  # older rows have none
    ref = spec["reference"]
    out = [f"# {spec['title']}", ""]
    if spec.get("about"):
        out += [spec["about"].strip(), ""]
    shown = spec_path.relative_to(ROOT) if spec_path.is_relative_to(ROOT) else spec_path  # a spec kept elsewhere
    out += [f"Made by `python scripts/bench.py {shown}`; model `{spec['model']}`; "
            f"common arguments `{shlex.join(spec.get('args', []))}`. Commit(s): {', '.join(commits) or '-'}"
            + (" — **this table mixes commits**." if len(commits) > 1 else ".")
            + (f" Machine(s): {'; '.join(machines)}" + (" — **this table mixes machines**." if len(machines) > 1
                                                       else ".") if machines else ""),
            "Test scores are on the test split of `--seed S`, never seen by the search; ± is the sample SD over "
            f"seeds. \"Beats {ref}\" counts the seeds on which an arm's test score is higher than {ref}'s "
            "(ties in brackets). On a label set, \"constant answer\" is a prompt that answers the train split's most "
            "common label whatever the case (computed, no calls): what a model that cannot tell the cases apart "
            "gets by collapsing onto it; \"above constant\" counts the seeds on which an arm's test score is "
            "higher; \"collapsed\" counts the seeds on which the returned prompt answered (nearly) one label to "
            "every test case while the references did not (every row shows which and how often). Calls: the mean of "
            "the calls each run used of its budget (paid, plus answers it found in its cache before it started; "
            "every row shows both).", ""]
    checks = list(spec.get("check", []))
    if checks:
        out += ["\"Test by M\" (M: " + ", ".join(checks) + "): the test outputs the test column scores, scored "
                "against the references by `--metric M` instead (no calls; the spec's `check`), a check on the "
                "judge: a gain the judge gives and M does not is the judge's, not the task's. Every row shows the "
                "starting and the returned prompt's.", ""]
    out += [f"| set | budget | arm | test (mean ± SD) | test macro-F1 | val | calls | prompt tokens | beats {ref} on "
            f"seeds | fewer prompt tokens than {ref} on seeds | above constant on seeds | collapsed on test on seeds |"
            + (" steps to the returned prompt by LLM rewrites |" if spec.get("llm_steps") else "")
            + "".join(f" test by {m} (mean ± SD) |" for m in checks),
            "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if spec.get("llm_steps") else "")
            + "---|" * len(checks)]
    for s in spec["sets"]:
        const = constant_answer(s, spec["seeds"], _metric(spec), _balanced(spec))
        for budget in spec["budgets"]:
            at = [r for r in rows if r["set"] == s["name"] and r["budget"] == budget]
            if const and at:
                labs = sorted({v[0] for v in const.values()})
                out.append(f"| {s['name']} | {budget} | constant answer ({', '.join(labs)}) | "
                           f"{_ms([v[1] for v in const.values()])} | {_ms([v[2] for v in const.values()])} | - | 0 "
                           "| - | | | | |")
            # a table that mixes commits shows each arm once per commit ("reflex @abc1234"), compared with the
            # reference arm at the same commit: an average over versions would describe none of them
            for arm, commit in [(a, c) for a in spec["arms"] for c in versions]:
                rs = sorted((r for r in at if r["arm"] == arm["name"] and r["commit"] == commit),
                            key=lambda r: r["seed"])
                if not rs:
                    continue
                name = arm["name"] + (f" @{commit}" if len(commits) > 1 else "")
                refs = {r["seed"]: r["best_test"] for r in at if r["arm"] == ref and r["commit"] == commit}
                ref_tokens = {r["seed"]: r.get("prompt_tokens") for r in at
                              if r["arm"] == ref and r["commit"] == commit}
                versus = cheaper = ""
                if arm["name"] != ref:
                    paired = [r for r in rs if r["seed"] in refs]
                    wins = sum(r["best_test"] > refs[r["seed"]] for r in paired)
                    ties = sum(r["best_test"] == refs[r["seed"]] for r in paired)
                    versus = f"{wins} of {len(paired)} ({ties})"
                    both = [r for r in paired if r.get("prompt_tokens") is not None
                            and ref_tokens.get(r["seed"]) is not None]
                    if both:
                        fewer = sum(r["prompt_tokens"] < ref_tokens[r["seed"]] for r in both)
                        cheaper = f"{fewer} of {len(both)}"
                toks = [float(r["prompt_tokens"]) for r in rs if r.get("prompt_tokens") is not None]
                vals = [float(r["best_val"]) for r in rs if r.get("best_val") is not None]
                f1s = [r["test_labels"]["best"]["macro_f1"] for r in rs if r.get("test_labels")]
                f1 = _ms(f1s) if len(f1s) == len(rs) else "-"
                val = f"{statistics.mean(vals):.3f}" if vals else "-"
                tok = f"{statistics.mean(toks):.0f}" if toks else "-"
                test = _ms([r["best_test"] for r in rs])
                above = (f"{sum(r['best_test'] > const[r['seed']][1] for r in rs if r['seed'] in const)} of "
                         f"{sum(r['seed'] in const for r in rs)}") if const else ""
                n_fell = collapsed(rs)
                out.append(f"| {s['name']} | {budget} | {name} | {test} | {f1} | {val} | "
                           f"{statistics.mean(_used(r) for r in rs):.0f} | {tok} | {versus} | {cheaper} | {above} | "
                           f"{f'{n_fell} of {len(rs)}' if n_fell is not None else ''} |"
                           + (f" {llm_steps(rs)} |" if spec.get("llm_steps") else "")
                           + "".join(f" {_checked(rs, m)} |" for m in checks))
    out += screen(spec, rows)
    out += ["", "## Every row", "", "p: the paired test of the tuned prompt against the starting prompt on test. "
            "Steps: the operators of the candidates from the starting prompt to the returned one (its lineage; * "
            "the search accepted it as a new best: a step it did not accept may still be on the way, when a later "
            "candidate built on it was; rows recorded before the lineage list the accepted steps). Calls: "
            "the paid calls; \"+N reused\": N more answers came from the run's cache, paid for by an attempt stopped "
            "earlier, an arm sharing the cache, or (development runs) an earlier commit's run whose cache was copied "
            "in; they count against `--max-calls` as the calls they replace.",
            "",
            "| set | budget | arm | seed | test | val | start (test) | p | calls | stop | steps (* accepted) | commit |"
            + "".join(f" test by {m}: start → returned |" for m in checks),
            "|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(checks)]
    judged = any(r.get("judge") for r in rows)
    if judged:
        out[-2] += " judge: known answers right · self-agreement SD |"
        out[-1] += "---|"
    for r in rows:
        hand = ", ".join(f"{k} {v['val']:.3f}/{v['test']:.3f}" for k, v in (r.get("handwritten") or {}).items())
        extra = f" (val/test: {hand})" if hand else ""
        start = f"{r['baseline_test']:.3f}" if r.get("baseline_test") is not None else "-"
        val = f"{r['best_val']:.3f}" if r.get("best_val") is not None else "-"
        pv = f"{r['p_value']:.3f}" if r.get("p_value") is not None else "-"
        steps = (" → ".join(f"{st['operator']}{'*' if st['accepted'] else ''}" for st in r["lineage"]) if "lineage" in r
                 else ", ".join(r.get("accepted") or [])) or "-"
        calls = f"{r['calls']}" + (f" (+{r['reused_calls']} reused)" if r.get("reused_calls") else "")
        hit = fell(r)
        test = f"{r['best_test']:.3f}" + (f" (collapsed: {hit['label']}, {hit['answers']} of {hit['of']})"
                                           if hit else "")
        out.append(f"| {r['set']} | {r['budget']} | {r['arm']}{extra} | {r['seed']} | {test} | {val} | "
                   f"{start} | {pv} | {calls} | {r.get('stop') or '-'} | {steps} | {r['commit']} |"
                   + "".join(f" {_check_pair(r, m)} |" for m in checks) + (f" {_judged(r)} |" if judged else ""))
    held = [r for r in rows if r.get("holdout")]
    if held:
        sets = {s["name"]: s for s in spec["sets"]}
        const = {(r["set"], r["seed"]): holdout_constant(sets[r["set"]], r["seed"], _metric(spec), _balanced(spec))
                 for r in held if r["set"] in sets}
        out += ["", "## Held-out rows of the development set", "",
                "Each run's starting and returned prompts scored on rows of the set's file that no seed's split "
                "contains (the spec's `holdout`): a check that a gain accepted on val carries over, for development "
                "only. A hand-written row scores its prompt chosen on val. On a label set, \"constant\" is what "
                "answering the seed's most common train label scores there.", "",
                "| set | budget | arm | seed | start | returned | gain | constant | commit |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in held:
            h, c = r["holdout"], const.get((r["set"], r["seed"]))
            start, gain = ("-", "-") if h.get("start") is None else (f"{h['start']:.3f}",
                                                                      f"{h['best'] - h['start']:+.3f}")
            out.append(f"| {r['set']} | {r['budget']} | {r['arm']} | {r['seed']} | {start} | {h['best']:.3f} | "
                       f"{gain} | {'-' if c is None else f'{c:.3f}'} | {r['commit']} |")
        out += ["", "| set | budget | arm | returned on held-back rows (mean ± SD) | above constant on seeds |",
                "|---|---|---|---|---|"]
        # once per commit, as the summary above: a mean over two versions of the search describes neither
        for (name, budget, arm, commit) in dict.fromkeys((r["set"], r["budget"], r["arm"], r["commit"])
                                                         for r in held):
            rs = [r for r in held if (r["set"], r["budget"], r["arm"], r["commit"]) == (name, budget, arm, commit)]
            above = [r["holdout"]["best"] > c for r in rs if (c := const.get((r["set"], r["seed"]))) is not None]
            label = arm + (f" @{commit}" if len(commits) > 1 else "")
            out.append(f"| {name} | {budget} | {label} | {_ms([r['holdout']['best'] for r in rs])} | "
                       f"{f'{sum(above)} of {len(above)}' if above else '-'} |")
    out += ["", "The exact command of every row is in the jsonl next to this file (`command`), with the tuned "
            "prompt (`best_prompt`).", ""]
    return "\n".join(out)


def compact(spec: dict[str, Any], rows: list[dict[str, Any]], budget: int) -> str:
    """One budget's table for the README: a row per set, a column per arm (test mean ± SD · mean calls, and on how
    many seeds the returned prompt collapsed onto one label), and on a label set the constant answer. Bold: the
    arm whose test score is the highest on every seed it shares with each other arm (a lead that holds on every
    seed); cells with fewer seeds than the spec say how many."""
    arms = [a["name"] for a in spec["arms"]]
    out = ["| set | constant answer | " + " | ".join(arms) + " |", "|---" * (len(arms) + 2) + "|"]
    for s in spec["sets"]:
        at = [r for r in rows if r["set"] == s["name"] and r["budget"] == budget]
        if not at:
            continue
        by = {a: {r["seed"]: r for r in at if r["arm"] == a} for a in arms}
        const = constant_answer(s, spec["seeds"], _metric(spec), _balanced(spec))
        cells = [f"{statistics.mean(v[1] for v in const.values()):.3f}" if const else "-"]
        for a in arms:
            rs = list(by[a].values())
            if not rs:
                cells.append("not run")
                continue
            cell = _ms([r["best_test"] for r in rs]) if len(rs) > 1 else f"{rs[0]['best_test']:.3f}"
            if any(_used(r) for r in rs):
                cell += f" · {statistics.mean(_used(r) for r in rs):,.0f}"
            want = next(ar for ar in spec["arms"] if ar["name"] == a).get("seeds", spec["seeds"])
            if len(rs) < len(want):
                cell += f" ({len(rs)} of {len(want)} seeds)"
            n_fell = collapsed(rs)
            if n_fell:
                cell += f", collapsed on {n_fell}"
            others = [o for o in arms if o != a and by[o]]
            leads = all(all(r["best_test"] > by[o][x]["best_test"] for x, r in by[a].items() if x in by[o])
                        and any(x in by[o] for x in by[a]) for o in others)
            cells.append(f"**{cell}**" if leads and others else cell)
        out.append(f"| {s['name']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def read_rows(jsonl: Path) -> list[dict[str, Any]]:
    """The rows in the jsonl; a last line another runner is still writing is left for the next read."""
    if not jsonl.exists():
        return []
    rows = []
    for line in jsonl.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written (blank lines too)
    return rows


class Claims:
    """Which runner makes which row: several runners on one jsonl (one per core, say) share its rows. A runner
    takes a row by creating a file named after it under the work folder (`claims/<jsonl>-<hash of its path>/`;
    atomic: one runner wins), writing its host and pid into it, and removes it once the row is in the jsonl. A
    claim whose process is gone (on this host) is taken over."""

    def __init__(self, jsonl: Path, work: Path) -> None:
        where = hashlib.sha256(str(jsonl.resolve()).encode()).hexdigest()[:10]
        self.dir = work / "claims" / f"{jsonl.stem}-{where}"
        self.me = f"{platform.node()} {os.getpid()}"

    def path(self, key: tuple[str, str, int, int]) -> Path:
        return self.dir / "~".join(str(k).replace("/", "_").replace(" ", "_") for k in key)

    def held(self, key: tuple[str, str, int, int]) -> bool:
        """Another live runner holds this row."""
        try:
            host, pid = self.path(key).read_text(encoding="utf-8").split()
        except (OSError, ValueError):
            return False
        if f"{host} {pid}" == self.me:
            return False
        if host != platform.node():
            return True  # another machine's runner: it cannot be checked, so it stands
        try:
            os.kill(int(pid), 0)
        except (ProcessLookupError, ValueError):
            return False
        except PermissionError:
            return True
        return True

    def take(self, key: tuple[str, str, int, int]) -> bool:
        self.dir.mkdir(parents=True, exist_ok=True)
        p = self.path(key)
        for _ in range(2):
            try:
                fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self.held(key):
                    return False
                p.unlink(missing_ok=True)  # its runner is gone: take the row over
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.me)
            return True
        return False

    def release(self, key: tuple[str, str, int, int]) -> None:
        self.path(key).unlink(missing_ok=True)


def wanted_key(w: tuple[dict[str, Any], dict[str, Any], int, int]) -> tuple[str, str, int, int]:
    """A (set, arm, budget, seed) to make as its row's key: (set name, arm name, budget, seed)."""
    return w[0]["name"], w[1]["name"], w[2], w[3]


def waits_for_home(w: tuple[dict[str, Any], dict[str, Any], int, int],
                   left: Collection[tuple[str, str, int, int]], claims: Claims) -> bool:
    """A row whose arm shares another arm's home (`home`) is made after that arm's row of the same set, budget and
    seed, so it reuses that run's cache as the table says: it waits while that row is still to be made here or is
    being made by another runner."""
    s, arm, budget, seed = w
    first = (s["name"], arm.get("home") or arm["name"], budget, seed)
    return first != wanted_key(w) and (first in left or claims.held(first))


def _stopped(signum: int, frame: object) -> None:
    """SIGTERM (`kill`) as an exception: subprocess.run then stops the run it is waiting on, which would
    otherwise go on competing for the cores with the next benchmark."""
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _stopped)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", type=Path)
    ap.add_argument("--jsonl", type=Path, help="default: the spec's name with .jsonl")
    ap.add_argument("--out", type=Path, help="the markdown table; default: the spec's name with .md")
    ap.add_argument("--sets", nargs="+")
    ap.add_argument("--arms", nargs="+")
    ap.add_argument("--budgets", nargs="+", type=int)
    ap.add_argument("--seeds", nargs="+", type=int)
    ap.add_argument("--code", help="measure this checkout of reflexopt instead of the one holding this script")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "reflexopt-bench"))
    ap.add_argument("--allow-dirty", action="store_true", help="run on uncommitted changes (rows marked dirty)")
    ap.add_argument("--render", action="store_true", help="only rewrite the markdown from the jsonl")
    ap.add_argument("--add-lineage", action="store_true",
                    help="give rows recorded without their lineage one, from their runs still in --work, and exit")
    ap.add_argument("--keep-runs", type=Path, metavar="DIR",
                    help="archive each row's run (candidates, per-case scores, events; no cache) into DIR as it "
                         "finishes, and the runs of rows already in the jsonl still in --work; with --render, only "
                         "the latter")
    ap.add_argument("--compact", type=int, metavar="BUDGET",
                    help="print that budget's table for the README (a row per set, a column per arm) and exit")
    args = ap.parse_args()
    spec_path = args.spec.resolve()
    spec = load_spec(spec_path)
    jsonl = args.jsonl or spec_path.with_suffix(".jsonl")
    out = args.out or spec_path.with_suffix(".md")
    rows = read_rows(jsonl)
    if args.compact:
        print(compact(spec, rows, args.compact))
        return
    if args.add_lineage:
        n = add_lineage(spec, rows, Path(args.work))
        tmp = jsonl.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(jsonl)
        out.write_text(render(spec, rows, spec_path), encoding="utf-8")
        print(f"{n} rows given their lineage", file=sys.stderr)
        return
    if args.keep_runs:
        print(f"{keep_runs(spec, rows, Path(args.work), args.keep_runs)} runs archived in {args.keep_runs}",
              file=sys.stderr)
    if not args.render:
        runner = Runner(spec, args)
        runner.work.mkdir(parents=True, exist_ok=True)
        wanted = [(s, arm, budget, seed) for s in spec["sets"] if not args.sets or s["name"] in args.sets
                  for budget in args.budgets or spec["budgets"] for seed in args.seeds or spec["seeds"]
                  for arm in spec["arms"] if not args.arms or arm["name"] in args.arms
                  if seed in arm.get("seeds", [seed]) and s["name"] in arm.get("sets", [s["name"]])]
        claims = Claims(jsonl, runner.work)
        while True:
            rows = read_rows(jsonl)  # with the rows other runners on this jsonl appended since
            done = {(r["set"], r["arm"], r["budget"], r["seed"]) for r in rows}
            left = {wanted_key(w): w for w in wanted if wanted_key(w) not in done}
            key = next((k for k, w in left.items() if not waits_for_home(w, left.keys(), claims) and claims.take(k)),
                       None)
            if key is None:
                if left:
                    print(f"{len(left)} rows left to the other runners on {jsonl.name}", file=sys.stderr)
                break
            s, arm, budget, seed = left[key]
            try:
                if arm.get("kind") == "handwritten" and any(
                        r["set"] == s["name"] and r["arm"] == arm["name"] and r["seed"] == seed for r in rows):
                    row = {**next(r for r in rows if r["set"] == s["name"] and r["arm"] == arm["name"]
                                  and r["seed"] == seed), "budget": budget}  # no budget: scored once
                else:
                    row = runner.row(s, arm, budget, seed)
                rows.append(row)
                with jsonl.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            finally:
                claims.release(key)
            if args.keep_runs and arm.get("kind") != "handwritten":
                keep_run(home_of(spec, row, runner.work), args.keep_runs)
            print(f"{s['name']} {arm['name']} {budget} seed {seed}: test {row['best_test']:.3f} "
                  f"calls {row['calls']}", file=sys.stderr, flush=True)
            out.write_text(render(spec, rows, spec_path), encoding="utf-8")
        rows = read_rows(jsonl)
    out.write_text(render(spec, rows, spec_path), encoding="utf-8")


if __name__ == "__main__":
    main()
