"""Speed benchmark: each figure as a ratio to its ideal, with a loopback OpenAI-compatible server whose latency
is set here (no model, no network).

    python scripts/bench_speed.py --out scripts/results/speed.md

Figures:
- eval throughput at 1, 4, 16 and 64 slots against a 200 ms server (ideal: slots / 0.2 s);
- `reflexopt --help` wall time (target under 0.3 s);
- per-trial overhead at trial ~200 against trial ~1 (a line fitted through every trial's cost), with a zero-latency
  fake model (target ratio under 1.2);
- `runs list` over 200 interrupted runs with large logs (target under 2 s);
- paid answers: calls the server served against calls reflexopt reported, in runs with pruning (target equal);
- with `--pg URL`: trials per second of one run with 1, 2 and 4 processes on one PostgreSQL study (target: 2
  processes at least 0.8 of linear), and the share of the CPU the processes used.
Each figure is the median of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class Server(ThreadingHTTPServer):
    # the listen backlog is read in the constructor: set on an instance it is too late (the default 5 then drops
    # the SYNs of 64 clients connecting at once, and each retransmit costs a second)
    request_queue_size = 1024
    daemon_threads = True


class LatencyServer:
    def __init__(self, latency_s: float, answer: Any = None) -> None:
        self.count = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in two writes: with Nagle on, the body waits for the client's delayed ACK
            # (about 40 ms per call on Linux). Real servers (uvicorn, llama.cpp) set TCP_NODELAY too.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                req = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                time.sleep(latency_s)
                text = answer(req) if answer else "positive"
                body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                   "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                                "finish_reason": "stop"}],
                                   "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                with outer.lock:
                    outer.count += 1

        self.httpd = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


# `python -m` and `-c` put the working directory first on sys.path, so a reflexopt/ folder there (another
# checkout) would shadow the one on PYTHONPATH; PYTHONSAFEPATH (Python 3.11+) turns that off
SAFE_PATH = {"PYTHONSAFEPATH": "1"}


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, **SAFE_PATH, "REFLEXOPT_HOME": str(home), "OPENAI_API_KEY": "sk-bench-00000000000000"}


def throughput(slots: int, n: int, work: Path) -> float:
    srv = LatencyServer(0.2)
    data = work / f"t{slots}.jsonl"
    data.write_text("".join(json.dumps({"input": f"case {slots}-{i}", "ideal": "positive"}) + "\n" for i in range(n)))
    (work / "p.md").write_text("Say positive.\n")
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "reflexopt", "eval", str(data), str(work / "p.md"), "-m",
                        f"openai/m@concurrency={slots}", "--api-base", srv.url, "--concurrency", str(slots),
                        "--metric", "exact", "--json"], capture_output=True, text=True, env=_env(work / f"h{slots}"))
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(r.stderr[-2000:])
    return n / wall / (slots / 0.2)


def startup_free_throughput(slots: int, work: Path) -> float:
    """Throughput without the fixed start-up (imports, config, first connection): the difference of two runs,
    of about 1 s and 10 s of ideal time (shorter runs drown in the start-up's own noise)."""
    n_small, n_big = slots * 5, slots * 50
    t_small = 1 / throughput(slots, n_small, work) * n_small / (slots / 0.2)
    t_big = 1 / throughput(slots, n_big, work) * n_big / (slots / 0.2)
    return (n_big - n_small) / max(1e-9, t_big - t_small) / (slots / 0.2)


def help_time(*, bytecode: bool) -> float:
    """Wall time of `reflexopt --help`. bytecode=True: as on a default Python, which caches compiled modules (a
    first run writes the cache); False: with PYTHONDONTWRITEBYTECODE=1, as set on the machine these figures come
    from, where every start compiles reflexopt's own modules again (an editable install has no compiled copy)."""
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, **SAFE_PATH}
    if not bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [sys.executable, "-m", "reflexopt", "--help"]
    if bytecode:
        subprocess.run(cmd, capture_output=True, check=True, env=env)
    else:  # compiled copies left by other runs would still be read
        import importlib.util
        import shutil

        spec = importlib.util.find_spec("reflexopt")
        assert spec is not None and spec.origin is not None
        for cache in Path(spec.origin).parent.rglob("__pycache__"):
            shutil.rmtree(cache)
    t0 = time.monotonic()
    subprocess.run(cmd, capture_output=True, check=True, env=env)
    return time.monotonic() - t0


def trial_overhead(work: Path, trials: int) -> float:
    code = f"""
import json, time
from pathlib import Path
from reflexopt.models import FunctionModel, register_fake
from reflexopt.config import Budget, DataSpec, ModelSpec, OptimizeConfig, ScorerSpec
from reflexopt.optimizer import optimize
rows = [{{"input": f"{{'good' if i % 2 else 'bad'}} item {{i}}", "ideal": "positive" if i % 2 else "negative"}}
        for i in range(60)]
Path("{work}/d.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
Path("{work}/p.md").write_text("Look.\\n")
def task(m):
    t = " ".join(x["content"] for x in m)
    return "positive" if "good" in m[-1]["content"] and "positive" in t else "negative"
register_fake("fake/t", FunctionModel(task))
register_fake("fake/r", FunctionModel(lambda m: "no"))
cfg = OptimizeConfig(data=DataSpec(path="{work}/d.jsonl"), prompt_path="{work}/p.md", model=ModelSpec(id="fake/t"),
                     reasoning=ModelSpec(id="fake/r"), scorer=ScorerSpec(metric="contains"),
                     budget=Budget(max_trials={trials}, patience=100000), pruning=False)
r = optimize(cfg, run_dir=Path("{work}/run"))
print(r.run_dir)
"""
    env = _env(work / "home")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    events = [json.loads(x) for x in (work / "run" / "events.jsonl").read_text().splitlines()]
    times = [e["t"] for e in events if e["event"] == "trial"]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # a least-squares line through every gap (trial cost against trial number): the ratio of its value at the last
    # trial to its value at the first. Comparing the first and last few gaps alone mostly measured which operators
    # those few trials happened to use (a demos trial renders more text than a cue trial).
    # Theil-Sen (the median of pairwise slopes), not least squares: a few gaps stretched by the machine (this VM's
    # CPU speed varies within minutes) moved the least-squares ratio by 0.3 between identical runs
    from scipy.stats import theilslopes

    slope, intercept, _, _ = theilslopes(gaps, range(len(gaps)))
    return float((intercept + slope * (len(gaps) - 1)) / intercept)


def runs_list_time(work: Path, n: int) -> float:
    runs = work / "home" / "runs"
    for i in range(n):
        d = runs / f"20261123-0000{i:03d}-beef"
        (d / "candidates").mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps({"data": {"path": "x/d.jsonl"}, "model": {"id": "openai/m"}}))
        (d / "progress.json").write_text(json.dumps({"calls": 1000, "cost_usd": 0.1, "baseline_val": 0.2,
                                                     "best_val": 0.5}))
        row = json.dumps({"key": "k" * 16, "split": "val", "calls": 1, "case_id": "1", "output": "x" * 200})
        (d / "evals.jsonl").write_text((row + "\n") * 4000)  # a large log that must not be read
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "reflexopt", "runs", "list", "--json"], capture_output=True, check=True,
                   env=_env(work / "home"))
    return time.monotonic() - t0


def _label_task(work: Path, n: int) -> tuple[Path, Path]:
    """A two-label task (items say good or bad) and a vague prompt."""
    rows = [{"input": f"{'good' if i % 2 else 'bad'} item {i}", "ideal": "positive" if i % 2 else "negative"}
            for i in range(n)]
    data = work / "task.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (work / "task.md").write_text("Look.\n")
    return data, work / "task.md"


def paid_answers(work: Path) -> tuple[int, int]:
    def answer(req: dict[str, Any]) -> str:
        item = req["messages"][-1]["content"]
        text = " ".join(m["content"] for m in req["messages"])
        return ("positive" if "good" in item else "negative") if "positive" in text else "hmm"

    srv = LatencyServer(0.05, answer)
    data, prompt = _label_task(work, 90)
    r = subprocess.run([sys.executable, "-m", "reflexopt", "optimize", str(data), str(prompt), "-m",
                        "openai/m", "--api-base", srv.url, "--metric", "contains", "--max-trials", "12",
                        "--concurrency", "8", "--json"], capture_output=True, text=True, env=_env(work / "pa-home"))
    if r.returncode != 0:
        raise SystemExit(r.stderr[-2000:])
    return srv.count, int(json.loads(r.stdout)["model_calls"])


def scale_out(work: Path, pg: str, processes: int, trials: int) -> tuple[float, float, float]:
    """Trials per second of one optimize run with `processes - 1` workers joining it through PostgreSQL, against
    a 100 ms server (each process keeps 4 calls in flight, so one process is latency-bound, not CPU-bound), the
    share of the machine's CPU that all reflexopt processes used meanwhile, and the trials per second of the
    search phase alone.

    The server's answers depend on the whole prompt (better when it names the labels), so candidates score
    differently and only prompts that render alike are duplicates, as with a real model."""
    def answer(req: dict[str, Any]) -> str:
        text = json.dumps(req["messages"])
        item = req["messages"][-1]["content"]
        right = "positive" if "good" in item else "negative"
        luck = int(hashlib.md5(text.encode()).hexdigest(), 16) % 100
        return right if luck < (80 if "positive" in text else 30) else "not sure"

    srv = LatencyServer(0.1, answer)
    data, prompt = _label_task(work, 60)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    coord = subprocess.Popen([sys.executable, "-m", "reflexopt", "optimize", str(data), str(prompt), "-m",
                              "openai/m", "--api-base", srv.url, "--metric", "contains", "--storage", pg,
                              "--max-trials", str(trials), "--patience", "100000", "--no-prune", "--concurrency", "4",
                              "--json", "--run-dir", str(work / "run")], env=_env(work / "h0"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = [subprocess.Popen([sys.executable, "-m", "reflexopt", "worker", "--storage", pg, "--wait", "60",
                                 "--json"], env=_env(work / f"h{i}"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for i in range(1, processes)]
    out, err = coord.communicate()
    wall = time.monotonic() - t0
    for w in workers:
        w.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if coord.returncode != 0:
        raise SystemExit(err[-2000:])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # the search phase alone: trials over the span from the first trial's start to the last one's end (without
    # the start-up, the baseline, the test verdict and the exit, which no number of workers shortens)
    from reflexopt.search import Search

    with Search(pg, (work / "run" / "study_name").read_text(encoding="utf-8").strip()) as search:
        done = [t for t in search.study.get_trials(deepcopy=False)
                if t.number > 0 and t.datetime_start and t.datetime_complete]  # trial 0: the baseline
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return int(json.loads(out)["trials"]) / wall, cpu / wall / (os.cpu_count() or 1), len(done) / span


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "scripts" / "results" / "speed.md"))
    ap.add_argument("--pg", help="a PostgreSQL URL for the scale-out figure (each run makes its own study)")
    ap.add_argument("--scale-trials", type=int, default=60)
    args = ap.parse_args()
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for slots in (1, 4, 16, 64):
            vals = []
            for i in range(args.repeat):
                (work / f"s{slots}-{i}").mkdir()
                vals.append(startup_free_throughput(slots, work / f"s{slots}-{i}"))
            rows.append((f"eval throughput, {slots} slots, 200 ms server", f"{statistics.median(vals):.2f} of ideal",
                         "≥ 0.9"))
            print(rows[-1], file=sys.stderr)
        helps = [help_time(bytecode=True) for _ in range(max(3, args.repeat))]
        rows.append(("`reflexopt --help`", f"{statistics.median(helps):.2f} s", "< 0.3 s"))
        print(rows[-1], file=sys.stderr)
        helps = [help_time(bytecode=False) for _ in range(max(3, args.repeat))]
        rows.append(("`reflexopt --help` with PYTHONDONTWRITEBYTECODE=1 (compiles reflexopt's modules each start)",
                     f"{statistics.median(helps):.2f} s", ""))
        print(rows[-1], file=sys.stderr)
        (work / "lst").mkdir()
        rows.append(("`runs list`, 200 interrupted runs with 4,000-line logs",
                     f"{runs_list_time(work / 'lst', 200):.2f} s", "< 2 s"))
        print(rows[-1], file=sys.stderr)
        ratios = []
        for i in range(args.repeat):
            (work / f"tr{i}").mkdir()
            ratios.append(trial_overhead(work / f"tr{i}", args.trials))
        rows.append((f"per-trial overhead, trial ~{args.trials} / trial ~1 (zero-latency fake)",
                     f"{statistics.median(ratios):.2f} (runs: {', '.join(f'{x:.2f}' for x in ratios)})", "< 1.2"))
        print(rows[-1], file=sys.stderr)
        (work / "pa").mkdir()
        served, reported = paid_answers(work / "pa")
        rows.append(("paid answers: served by the server / reported by reflexopt (pruning on)",
                     f"{served} / {reported}", "equal"))
        print(rows[-1], file=sys.stderr)
        if args.pg:
            rate: dict[int, float] = {}
            search_rate: dict[int, float] = {}
            for n in (1, 2, 4):
                vals, cpus, searching = [], [], []
                for i in range(args.repeat):
                    (work / f"so{n}-{i}").mkdir()
                    r, c, sr = scale_out(work / f"so{n}-{i}", args.pg, n, args.scale_trials)
                    vals.append(r)
                    cpus.append(c)
                    searching.append(sr)
                rate[n] = statistics.median(vals)
                search_rate[n] = statistics.median(searching)
                rows.append((f"scale-out: {n} process(es) on one study (PostgreSQL, 100 ms server, "
                             f"{args.scale_trials} trials), trials/s: whole run; search phase",
                             f"{rate[n]:.3f} ({rate[n] / (n * rate[1]):.2f} of linear); {search_rate[n]:.3f} "
                             f"({search_rate[n] / (n * search_rate[1]):.2f} of linear); reflexopt used "
                             f"{statistics.median(cpus):.0%} of the CPU",
                             "≥ 0.8 of linear at 2" if n == 2 else ""))
                print(rows[-1], file=sys.stderr)
    lines = ["# Speed", "", f"Made by `python scripts/bench_speed.py {' '.join(sys.argv[1:])}` on "
             f"{time.strftime('%Y-%m-%d')}, 2-core CPU, loopback server (no model). Medians of {args.repeat} runs "
             "where repeated.", "", "| figure | measured | target |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    if not args.pg:
        lines += ["", "Not measured here: scale-out with 1, 2 and 4 PostgreSQL workers (give `--pg URL`)."]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
