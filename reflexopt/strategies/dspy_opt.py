"""DSPy's MIPROv2, GEPA and SIMBA as reflexopt strategies. The only module that imports dspy (lazily: it is
loaded only when `--strategy mipro|gepa|simba` is chosen).

- `ReflexLM` (a `dspy.BaseLM`) sends every DSPy call through reflexopt's ModelClient on the run's event loop:
  the response cache (a re-run pays nothing), the hard budget (a call past `--max-calls` is refused, never
  made), retries, accounting and the embedded model all work as for the reflex strategy.
- `ReflexAdapter` renders the task program exactly as reflexopt renders a prompt file (instruction, demos as
  chat turns or inline, the input, the answer cue) and takes the raw completion as the output: it never fails
  to parse, so a small model such as SmolLM2-135M gets a real score instead of AdapterParseError. DSPy's own
  signatures (MIPRO's proposer, GEPA's reflection) are rendered as plain "field: value" text, and the raw
  completion fills their output field.
- The scorer is the DSPy metric; for GEPA and SIMBA the feedback is the judge's reasoning and failure category,
  or for a metric what was expected against what came back.
- GEPA's instruction proposal and SIMBA's rule are reflexopt meta-prompts (prompts/gepa_reflect.md,
  prompts/simba_rule.md) with the answer read from a tagged block: DSPy's own ask for JSON, or put the program's
  source code in the request, which weak reasoning models cannot answer and small ones cannot fit.
- The optimized program maps back to a normal prompt file: its instruction becomes the text and its demos the
  front-matter demos, with the starting prompt's structure.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import threading
import warnings
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import dspy

from ..data import Case
from ..errors import BudgetExceeded
from ..models import ModelClient
from ..prompt import Demo, Prompt
from .base import SearchContext

warnings.filterwarnings("ignore", message=r"Implementing custom LMs through BaseLM", category=DeprecationWarning)
for _name in ("dspy", "gepa", "optuna"):
    # their INFO lines would flood the terminal, and DSPy logs an ERROR line per example once the budget is
    # spent; a DSPy failure that ends the search is reported by the strategy as a note
    logging.getLogger(_name).setLevel(logging.CRITICAL)


@contextlib.contextmanager
def _no_progress_bars() -> Any:
    """tqdm bars (DSPy's bootstrapping and evaluation) disabled while DSPy compiles."""
    import functools

    import tqdm

    original = tqdm.tqdm.__init__
    tqdm.tqdm.__init__ = functools.partialmethod(original, disable=True)
    try:
        yield
    finally:
        tqdm.tqdm.__init__ = original


def halt_if(stopped: threading.Event) -> None:
    """Called by DSPy's worker threads before each call: once the search is over, no call is made."""
    if stopped.is_set():
        raise BudgetExceeded("the search was stopped", fix="run the same command again to resume")


class ReflexLM(dspy.BaseLM):  # type: ignore[misc]  # dspy ships no type information
    """A DSPy LM that calls a reflexopt ModelClient on the run's event loop (DSPy runs in worker threads)."""

    def __init__(self, client: ModelClient, loop: asyncio.AbstractEventLoop, *, max_tokens: int | None = None,
                 stopped: threading.Event | None = None) -> None:
        super().__init__(model=f"reflexopt/{client.spec.id}", model_type="chat", temperature=0.0,
                         max_tokens=max_tokens, cache=False)
        self.client = client
        self.loop = loop
        self.cap = max_tokens
        self.stopped = stopped or threading.Event()  # set when the search is over: no call is made after it

    def forward(self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None,
                **kwargs: Any) -> Any:
        msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in (messages or [])] or \
            [{"role": "user", "content": str(prompt or "")}]
        # a copy made for sampling (`lm.copy(rollout_id=r, temperature=1.0)`: SIMBA's trajectories, bootstrapping
        # rounds) keeps those settings in its kwargs, which DSPy does not pass to forward(): without them every
        # sample was the cached greedy answer
        own = self.kwargs if self.kwargs.get("rollout_id") is not None else {}
        temperature = kwargs.get("temperature", own.get("temperature"))
        rollout = kwargs.get("rollout_id", own.get("rollout_id"))
        sample = rollout if isinstance(rollout, int) else (abs(hash(str(rollout))) % 10_000 if rollout else 0)
        cap = self.client.spec.max_tokens or self.cap or kwargs.get("max_tokens")
        halt_if(self.stopped)
        res = asyncio.run_coroutine_threadsafe(
            self.client.complete(msgs, sample=sample, temperature=temperature, max_tokens=cap), self.loop).result()
        if res.budget_exhausted:
            raise BudgetExceeded("the call budget is spent", fix="raise --max-calls or --max-cost")
        if not res.ok:
            raise RuntimeError(res.error or "model call failed")
        usage = {"prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
                 "total_tokens": res.prompt_tokens + res.completion_tokens}
        choice = SimpleNamespace(message=SimpleNamespace(content=res.text, tool_calls=None), finish_reason="stop")
        return SimpleNamespace(choices=[choice], usage=usage, model=self.model, cache_hit=res.cached)


class TaskSignature(dspy.Signature):  # type: ignore[misc]
    """Answer the input."""

    input: str = dspy.InputField()
    answer: str = dspy.OutputField()


class ReflexAdapter(dspy.Adapter):  # type: ignore[misc]
    """Renders the task exactly as a reflexopt prompt file; takes the raw completion as the output."""

    def __init__(self, base: Prompt, cases: dict[str, Case]) -> None:
        super().__init__()
        self.base = base
        self.cases = cases

    def prompt_for(self, signature: Any, demos: list[Any]) -> Prompt:
        return to_prompt(self.base, signature.instructions, demos)

    def format(self, signature: Any, demos: list[Any], inputs: dict[str, Any]) -> list[dict[str, Any]]:
        if set(signature.input_fields) == {"input"} and set(signature.output_fields) == {"answer"}:
            text = str(inputs.get("input", ""))
            case = self.cases.get(text) or Case(id="dspy", input=text)
            return list(self.prompt_for(signature, demos).render(case))
        # DSPy's own steps (instruction proposals, reflection): plain text fields, raw completion back
        parts = [f"{name}: {inputs[name]}" for name in signature.input_fields if name in inputs]
        out = next(iter(signature.output_fields), "answer")
        return [{"role": "system", "content": str(signature.instructions)},
                {"role": "user", "content": "\n\n".join(parts) + f"\n\nWrite the {out.replace('_', ' ')}."}]

    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        text = str(completion).strip()
        return {name: text for name in signature.output_fields}


def to_prompt(base: Prompt, instruction: str, demos: list[Any]) -> Prompt:
    """A DSPy predictor's instruction and demos as a reflexopt prompt, with the starting prompt's structure."""
    shots = tuple(Demo(str(d.get("input", "")), str(d.get("answer", ""))) for d in demos
                  if d.get("input") is not None and d.get("answer") is not None)
    text = (instruction or base.text).strip() + "\n"
    return base.with_(text=text, demos=shots, source="<dspy>")


def ask_tagged(lm: ReflexLM, text: str, tag: str) -> str:
    """The reasoning model's answer to a meta-prompt: the last <tag>...</tag> block of its reply, stripped; ""
    when the call failed or the reply has none. A spent budget is not a failure: it ends the search."""
    try:
        reply = str(lm(text)[0])
    except BudgetExceeded:
        raise
    except Exception:  # noqa: BLE001 - a failed request is an unusable reply
        return ""
    found = re.findall(rf"<{tag}>\s*(.*?)\s*</{tag}>", reply, re.S | re.I)
    return found[-1].strip() if found else ""


class ReflexProposer:
    """GEPA's instruction proposal through a reflexopt meta-prompt: DSPy's built-in proposer parses the
    reflection model's reply with a JSON adapter, which weak reasoning models fail every time. The new
    instruction is the last <prompt>...</prompt> block; an unusable reply keeps the current instruction."""

    def __init__(self, lm: ReflexLM) -> None:
        self.lm = lm

    def __call__(self, candidate: dict[str, str], reflective_dataset: Any,
                 components_to_update: list[str]) -> dict[str, str]:
        from ..prompts import inert, meta_prompt

        out: dict[str, str] = {}
        for name in components_to_update:
            rows = list(reflective_dataset.get(name, []))[:6]
            examples = inert("\n\n".join(
                f"## Example {i}\nInput: {str(r.get('Inputs', ''))[:600]}\n"
                f"Output: {str(r.get('Generated Outputs', ''))[:400]}\nFeedback: {str(r.get('Feedback', ''))[:400]}"
                for i, r in enumerate(rows, 1)), "prompt")
            text = meta_prompt("gepa_reflect", instruction=candidate.get(name, ""), examples=examples)
            new = ask_tagged(self.lm, text, "prompt")  # a failed reflection keeps the instruction
            out[name] = new if 8 <= len(new) <= 8000 else candidate.get(name, "")
        return out


class ReflexRule:
    """SIMBA's "append a rule" step through a reflexopt meta-prompt (prompts/simba_rule.md). SIMBA samples the
    task model several times per case and keeps the cases whose answers scored furthest apart; for one such
    case this asks the reasoning model for advice that makes the model answer like its better answer, and
    appends it to the instruction (as DSPy's own step does). The advice is the last <rule>...</rule> block of
    the reply; an unusable reply adds nothing. The same skips as DSPy's: none when the better answer is at or
    below the batch's 10th percentile or the worse at or above its 90th, and none when the two scored alike
    (nothing to contrast)."""

    __name__ = "append_a_rule"  # SIMBA logs its strategies by name

    def __init__(self, lm: ReflexLM) -> None:
        self.lm = lm

    def __call__(self, bucket: list[dict[str, Any]], system: Any, **kw: Any) -> bool:
        from ..prompts import inert, meta_prompt

        good, bad = bucket[0], bucket[-1]
        if good["score"] <= kw["batch_10p_score"] or bad["score"] >= kw["batch_90p_score"] or \
                good["score"] <= bad["score"]:
            return False

        def safe(text: object, limit: int) -> str:
            return inert(str(text)[:limit], "prompt", "rule")

        def said(entry: dict[str, Any]) -> str:
            answer = str(getattr(entry.get("prediction"), "answer", "") or "")
            feedback = str((entry.get("output_metadata") or {}).get("feedback", ""))
            return safe(answer, 600) + (f"\nFeedback: {safe(feedback, 400)}" if feedback else "")

        example = good["example"]
        changed = False
        for _, predictor in system.named_predictors():
            instruction = str(predictor.signature.instructions)
            text = meta_prompt("simba_rule", instruction=safe(instruction, 4000),
                               input=safe(example.get("input", ""), 1500),
                               expected=safe(example.get("answer", "") or "(none given)", 600),
                               better_score=f"{float(good['score']):.2f}", better=said(good),
                               worse_score=f"{float(bad['score']):.2f}", worse=said(bad))
            rule = ask_tagged(self.lm, text, "rule")
            if 8 <= len(rule) <= 1000 and rule not in instruction:
                predictor.signature = predictor.signature.with_instructions(f"{instruction.rstrip()}\n\n{rule}")
                changed = True
        return changed


SIMBA_SHAPES = ((6, 32), (6, 16), (4, 16), (4, 12), (4, 8), (3, 8), (2, 6), (2, 4))  # (candidates, batch size)
SIMBA_MAX_STEPS = 30


def simba_size(cases: float, n_train: int) -> tuple[int, int, int]:
    """SIMBA's (candidates per step, mini-batch size, steps) for a budget of about `cases` scored cases. A step
    samples `n` trajectories of the batch, then scores up to n + 1 new candidates on it (and asks the reasoning
    model about once per candidate); at the end up to n + 1 winners are scored on all of train. DSPy's defaults
    (6 candidates, batches of 32) where the budget pays for at least 3 steps; smaller batches, then fewer
    candidates, where it does not; at least one step. The batch never exceeds the train split."""
    for n, size in SIMBA_SHAPES:
        batch = max(1, min(size, n_train))
        per_step = batch * (2 * n + 1) + n
        steps = int((cases - (n + 1) * n_train) // per_step)
        if steps >= 3 or (n, size) == SIMBA_SHAPES[-1]:
            return n, batch, max(1, min(SIMBA_MAX_STEPS, steps))
    raise AssertionError("unreachable")


def in_daemon_thread(loop: asyncio.AbstractEventLoop, fn: Callable[[], Any]) -> asyncio.Future[Any]:
    """`fn()` in a daemon thread, awaited as a future of `loop`. Not `asyncio.to_thread`: on Ctrl-C or SIGTERM
    `asyncio.run` joins the default executor's threads before it returns, and DSPy's thread, whose calls run on
    that same loop, went on making them (GEPA never stopped)."""
    fut: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if not fut.done():
            fut.set_exception(error) if error is not None else fut.set_result(value)

    def target() -> None:
        try:
            value, error = fn(), None
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
            value, error = None, e
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits it any more
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=target, name="reflexopt-dspy", daemon=True).start()
    return fut


class DspyStrategy:
    """`mipro` (MIPROv2), `gepa` (GEPA) or `simba` (SIMBA), sized to the run's remaining call budget."""

    distributed = False  # DSPy runs its own loop in one process
    any_task = False  # it drives the task model itself, so it tunes a prompt file, not a pipeline

    def __init__(self, kind: str) -> None:
        if kind not in ("mipro", "gepa", "simba"):
            raise ValueError(kind)
        self.name = kind

    async def search(self, ctx: SearchContext) -> str:
        loop = asyncio.get_running_loop()
        if len(ctx.baseline_prompts) > 1:
            return f"{self.name} tunes one prompt: this run has {len(ctx.baseline_prompts)} (use --strategy reflex)"
        base = ctx.baseline_prompts.primary
        cases = {c.input_text: c for c in (*ctx.train, *ctx.val)}
        stopped = threading.Event()
        task_lm = ReflexLM(ctx.task_client, loop, stopped=stopped)
        reasoner_lm = ReflexLM(ctx.reasoner, loop, max_tokens=ctx.reasoner.cap(768), stopped=stopped)
        adapter = ReflexAdapter(base, cases)
        per_case = ctx.calls_per_case
        left = ctx.budget.remaining()  # cache answers count as calls made, so a re-run gets the same size
        budget = int(left) if left != float("inf") else 20 * len(ctx.val) * per_case
        examples = {c.id: dspy.Example(input=c.input_text, answer=c.ideal or "").with_inputs("input")
                    for c in (*ctx.train, *ctx.val)}
        train = [examples[c.id] for c in ctx.train]
        val = [examples[c.id] for c in ctx.val]
        by_text = {c.input_text: c for c in (*ctx.train, *ctx.val)}
        scorer = ctx.scorer
        kind = self.name

        def metric(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None) -> Any:
            case = by_text.get(str(gold.input)) or Case(id="dspy", input=str(gold.input), ideal=gold.answer or None)
            output = str(getattr(pred, "answer", "") or "")
            halt_if(stopped)
            s = asyncio.run_coroutine_threadsafe(scorer.score(case, output), loop).result()
            value = float(s.value or 0.0)
            if kind == "mipro":
                return value
            if s.reasoning or s.category:
                feedback = f"{s.category or 'verdict'}: {s.reasoning}".strip()
            else:
                feedback = (f"expected {case.ideal!r}, got {output[:300]!r}" if case.ideal
                            else f"score {value:.2f} for {output[:300]!r}")
            return dspy.Prediction(score=value, feedback=feedback)

        program = dspy.Predict(TaskSignature.with_instructions(base.text.strip()))
        program.demos = [dspy.Example(input=d.input, answer=d.output) for d in base.demos]
        seed = ctx.config.seed

        def compile_() -> Any:
            # DSPy reports progress with print() and tqdm bars; reflexopt's own view shows the run's progress, and
            # stdout belongs to the command's result (`--json`): both are kept off the terminal
            with contextlib.redirect_stdout(io.StringIO()), _no_progress_bars(), \
                    dspy.context(lm=task_lm, adapter=adapter):
                if kind == "simba":
                    # SIMBA has no val set of its own: it ascends on train mini-batches and picks its result on
                    # train; reflexopt scores that result on val like any candidate
                    n, batch, steps = simba_size(0.8 * budget / per_case, len(train))
                    opt = dspy.SIMBA(metric=metric, bsize=batch, num_candidates=n, max_steps=steps, max_demos=4,
                                     prompt_model=reasoner_lm, num_threads=max(1, ctx.task_client.concurrency))
                    opt.strategies = [ReflexRule(reasoner_lm) if getattr(f, "__name__", "") == "append_a_rule"
                                      else f for f in opt.strategies]
                    return opt.compile(program, trainset=train, seed=seed)
                if kind == "gepa":
                    calls = max(len(val) + 10, int(0.8 * budget / per_case))
                    opt = dspy.GEPA(metric=metric, max_metric_calls=calls, reflection_lm=reasoner_lm,
                                    instruction_proposer=ReflexProposer(reasoner_lm),
                                    num_threads=max(1, ctx.task_client.concurrency), seed=seed, track_stats=False,
                                    use_merge=True)
                    return opt.compile(program, trainset=train, valset=val)
                n_cand = 6
                mb = max(1, min(25, len(val)))
                fixed = n_cand * 4 + 20 + n_cand  # bootstrapping (bounded below), data summary, proposals
                trials = max(2, int((0.8 * budget / per_case - fixed) / (mb + len(val) / 5)))
                opt = dspy.MIPROv2(metric=metric, prompt_model=reasoner_lm, task_model=task_lm, auto=None,
                                   num_candidates=n_cand, max_bootstrapped_demos=2, max_labeled_demos=4,
                                   num_threads=max(1, ctx.task_client.concurrency), seed=seed, verbose=False,
                                   track_stats=False, max_errors=10 ** 6)
                return opt.compile(program, trainset=train, valset=val, num_trials=trials, minibatch_size=mb,
                                   minibatch=len(val) > mb)

        try:
            best = await in_daemon_thread(loop, compile_)
        except BudgetExceeded:
            return "budget"
        except Exception as e:  # noqa: BLE001 - DSPy's own failures end the search, the run keeps its verdict
            ctx.emit("note", {"message": f"{self.name} stopped: {type(e).__name__}: {str(e)[:200]}"})
            return f"{self.name} failed ({type(e).__name__})"
        finally:
            stopped.set()  # interrupted (the await cancelled), DSPy's threads stop calling at their next call
        predictor = best.predictors()[0]
        prompt = to_prompt(base, predictor.signature.instructions, list(predictor.demos))
        await ctx.record(prompt, operator=self.name, reasoning=f"DSPy {self.name}: instruction and "
                         f"{len(prompt.demos)} demos from the optimized program")
        return ctx.stop_reason() or f"{self.name} finished"
