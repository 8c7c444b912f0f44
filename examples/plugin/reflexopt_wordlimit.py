"""A reflexopt plugin: `--metric word-limit:N` passes outputs of at most N words (default 12)."""

from reflexopt import Score


class WordLimit:
    kind = "metric"  # no model calls

    def __init__(self, spec: str, cases: object) -> None:  # spec is what follows --metric
        self.limit = int(spec.partition(":")[2] or 12)
        self.name = f"word-limit:{self.limit}"

    def describe(self) -> str:
        return f"1 if the output has at most {self.limit} words, else 0"

    async def score(self, case: object, output: str) -> Score:
        ok = len(output.split()) <= self.limit
        return Score(1.0 if ok else 0.0, ok, category=None if ok else "too long")
