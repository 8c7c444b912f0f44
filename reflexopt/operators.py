"""The operator registry and the policy that picks an operator for each trial.

One table names every rewrite operator: whether it asks the reasoning model, whether it needs a diagnosis of
failing cases, and its family. The search space (search.py), the proposal (propose.py), the trial (runner.py)
and the call estimate (optimizer.py) all read this table, so a new operator is one row here plus its code in
propose.py.

The policy is deliberately not left to TPE. TPE learns from the parameters it suggested, so an LLM rewrite that
fell back to another operator taught it the wrong lesson, and with a few dozen trials it kept asking a reasoning
model that never produced a usable prompt. Instead:

- every operator family available for the task is tried once (its first operator in registry order) before
  patience may stop the run. A family, not each operator: the rewrites by the reasoning model are one
  family, so with a small budget the run is not spent asking each of them once before what pays is repeated;
- after that, Thompson sampling over families, crediting the family of the operator that actually ran with a
  success when its candidate beat its parent on val (pruned, failed and duplicate candidates are failures; an
  asked rewrite that fell back is a failure of the rewrite family). Within the drawn family, the operator run
  least so far (registry order breaks ties), so every rewrite still gets its turn;
- the reasoning model is stopped being asked once its replies keep being unusable.

Every choice is a pure function of the history and a seeded RNG, so the same seed gives the same run.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Operator:
    name: str
    family: str
    needs_llm: bool = False
    needs_diagnosis: bool = False
    about: str = ""


REGISTRY: tuple[Operator, ...] = (
    Operator("instruct", "instruction", about="a task instruction built from the task facts (labels, input kind, "
             "output form; on free text, what the references do with their input), in one of several phrasings"),
    Operator("demos", "demos", about="few-shot demos from train: how many, which ones, label balance and order"),
    Operator("cue", "cue", about="an answer cue after the input, optionally repeating the allowed labels"),
    Operator("format", "format", about="an explicit output-format spec"),
    Operator("structure", "structure", about="instruction as system or user message; demos as chat turns or inline"),
    Operator("induce", "rewrite", True, False, "on free text, a new instruction induced from train inputs and "
             "their references (what the outputs do with their inputs), as APE and MIPROv2's proposer do"),
    Operator("fix", "rewrite", True, True, "a targeted fix from a diagnosis of failing train cases"),
    Operator("restructure", "rewrite", True, True, "a rewrite into clear sections"),
    Operator("constraints", "rewrite", True, True, "the diagnosis' fixes as emphasised rules"),
    Operator("compress", "rewrite", True, False, "a shorter prompt with the same content"),
    Operator("merge", "rewrite", True, False, "the best of two parents in one prompt"),
)
BY_NAME = {op.name: op for op in REGISTRY}
NAMES = tuple(op.name for op in REGISTRY)
LLM_OPERATORS = tuple(op.name for op in REGISTRY if op.needs_llm)

# the knobs of the no-LLM operators (TPE samples them; propose.py gives them meaning)
CUES: tuple[str, ...] = ("none", "answer", "label", "category", "options")
DEMO_PICKS: tuple[str, ...] = ("balanced", "random")
DEMO_ORDERS: tuple[str, ...] = ("cycle", "shuffled", "grouped")
N_PHRASINGS = 6

# the reasoning model is given up on after this many LLM rewrites with no usable reply at all,
# or when fewer than a quarter of its replies were usable after twice as many attempts
GIVE_UP_AFTER = 3


def get(name: str) -> Operator:
    return BY_NAME[name]


@dataclass(frozen=True)
class Outcome:
    """What one finished trial says about an operator: which one ran, whether the reasoning model was asked and
    answered usably, and whether the candidate beat its parent."""

    operator: str
    asked: str = ""
    asked_llm: bool = False
    llm_usable: bool = False
    improved: bool = False

    @property
    def fell_back(self) -> bool:
        return bool(self.asked) and self.asked != self.operator


def reasoner_ok(history: Iterable[Outcome]) -> bool:
    asked = [h for h in history if h.asked_llm]
    usable = sum(h.llm_usable for h in asked)
    if len(asked) >= GIVE_UP_AFTER and usable == 0:
        return False
    return not (len(asked) >= 2 * GIVE_UP_AFTER and usable < len(asked) / 4)


def available(*, categorical: bool, has_references: bool, has_train: bool, reasoner: bool,
              reasoner_healthy: bool, renders: bool = True, form: str = "",
              allowed: Sequence[str] | None = None) -> tuple[str, ...]:
    """Operators that can do something for this task now. `renders` False (a pipeline builds its own messages):
    no `structure` (instruction role, demo turns), which would change nothing its program sends. `form`: on free
    text, what the references do with their input (TaskFacts.form); a task instruction needs one. `allowed`: the
    task's own list, when it has one (a rubric being aligned takes demos and rewrites only)."""
    out = []
    for op in REGISTRY:
        if allowed is not None and op.name not in allowed:
            continue
        if op.name == "structure" and not renders:
            continue
        if op.needs_llm and not (reasoner and reasoner_healthy):
            continue
        if op.name == "demos" and not (has_train and has_references):
            continue
        if op.name == "cue" and not categorical:
            continue
        if op.name == "instruct" and not (categorical or form):
            continue
        if op.name == "induce" and (categorical or not (has_train and has_references and renders)):
            # a label task's instruction from the facts (the labels) is what induction would find; a pipeline's
            # references are its program's end result, not what any one of its prompts should write
            continue
        if op.name == "format" and not has_references:
            continue
        out.append(op.name)
    return tuple(out)


def untried(ops: Sequence[str], history: Iterable[Outcome]) -> list[str]:
    """The first available operator of each family that no trial has run or asked yet, in registry order."""
    seen: set[str] = set()
    for h in history:
        seen.update(BY_NAME[o].family for o in (h.operator, h.asked or h.operator) if o in BY_NAME)
    out: list[str] = []
    for o in ops:
        fam = BY_NAME[o].family
        if fam not in seen:
            seen.add(fam)
            out.append(o)
    return out


def choose(ops: Sequence[str], history: Sequence[Outcome], rng: random.Random) -> str:
    """The operator for the next trial: an untried family first (registry order), then Thompson sampling over
    the families, then the family's least-run operator."""
    if not ops:
        raise ValueError("no operator is available")
    fresh = untried(ops, history)
    if fresh:
        return fresh[0]
    # the operator that ran gets the credit; an asked operator that fell back counts as a failure of its family
    runs: dict[str, int] = {}
    wins: dict[str, int] = {}
    tried: dict[str, int] = {}
    for h in history:
        fam = BY_NAME[h.operator].family if h.operator in BY_NAME else h.operator
        runs[fam] = runs.get(fam, 0) + 1
        wins[fam] = wins.get(fam, 0) + h.improved
        if h.fell_back and h.asked in BY_NAME:
            asked = BY_NAME[h.asked].family
            runs[asked] = runs.get(asked, 0) + 1
        tried[h.asked or h.operator] = tried.get(h.asked or h.operator, 0) + 1
    families = list(dict.fromkeys(BY_NAME[o].family for o in ops))
    best, best_draw = families[0], -1.0
    for fam in families:
        draw = rng.betavariate(1 + wins.get(fam, 0), 1 + runs.get(fam, 0) - wins.get(fam, 0))
        if draw > best_draw:
            best, best_draw = fam, draw
    members = [o for o in ops if BY_NAME[o].family == best]
    return min(members, key=lambda o: tried.get(o, 0))  # min keeps the first (registry order) on ties
