"""The package's shape, checked on its source: no module imports more than 10 of its siblings, and litellm,
optuna and dspy are each imported in exactly one module. Imports inside functions count (a lazy import still
runs); imports under `if TYPE_CHECKING:` never run and are not counted for the sibling limit (they are for the
three libraries: no annotation may need them elsewhere either)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "reflexopt"
MAX_SIBLINGS = 10
ONE_HOME = {"litellm": "models/litellm_backend.py", "optuna": "search.py", "dspy": "strategies/dspy_opt.py"}


def _module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _type_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:`."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                out.update(id(n) for n in ast.walk(stmt))
    return out


def imports(path: Path, text: str | None = None, *, type_only: bool = False) -> tuple[set[str], set[str]]:
    """(the package's modules this file imports, as their first component below `reflexopt`: `models`,
    `config`, ...; the third-party top-level packages it imports). `type_only`: count imports under
    TYPE_CHECKING too."""
    mod = _module_name(path)
    pkg = mod if path.name == "__init__.py" else mod[:-1]
    inner: set[str] = set()
    outer: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8") if text is None else text)
    skip = set() if type_only else _type_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: list[list[str]] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)]
                if node.module:
                    targets.append(base + node.module.split("."))
                else:
                    targets += [base + [a.name] for a in node.names]
            elif node.module:
                targets.append(node.module.split("."))
        elif isinstance(node, ast.Import):
            targets += [a.name.split(".") for a in node.names]
        for t in targets:
            if t[0] == "reflexopt":
                if len(t) > 1:
                    inner.add(t[1])
            else:
                outer.add(t[0])
    own = mod[1] if len(mod) > 1 else ""
    inner.discard(own)
    return inner, outer


FILES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_more_than_ten_siblings(path: Path) -> None:
    inner, _ = imports(path)
    # a subpackage's own modules are one sibling to the rest, and the parts of one whole to each other
    assert len(inner) <= MAX_SIBLINGS, f"{path.relative_to(PACKAGE)} imports {len(inner)}: {sorted(inner)}"


def test_litellm_optuna_and_dspy_each_have_one_home() -> None:
    for lib, home in ONE_HOME.items():
        users = sorted(str(p.relative_to(PACKAGE)) for p in FILES if lib in imports(p, type_only=True)[1])
        assert users == [home], f"{lib} imported in {users}"


def test_the_checker_sees_lazy_and_relative_imports() -> None:
    """The check itself can fail: function-level and relative imports are seen; type-only ones only on request."""
    probe = PACKAGE / "strategies" / "probe.py"
    text = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..data import Case\n"
            "def f():\n    import optuna\n    from ..config import X\n    from .. import events\n"
            "    from .base import Y\n")
    assert imports(probe, text) == ({"config", "events"}, {"typing", "optuna"})
    assert imports(probe, text, type_only=True)[0] == {"config", "events", "data"}
