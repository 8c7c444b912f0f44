"""A config file for `eval` and `optimize`: `reflexopt.yaml` in the current folder, or `--config FILE`.

Top-level keys apply to both commands, `eval:` / `optimize:` sections to one. Keys are the long option names
(`max-calls` or `max_calls`) plus `data` and `prompt`; command-line flags override the file (click's
default_map).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputFileError


def config_file(argv: list[str]) -> tuple[list[str], Path | None]:
    """`--config FILE` anywhere on the line, else ./reflexopt.yaml when it exists (only for eval/optimize)."""
    args = list(argv)
    if "--config" in args:
        i = args.index("--config")
        if i + 1 >= len(args):
            raise ConfigError("--config needs a file", fix="--config reflexopt.yaml")
        path = Path(args[i + 1])
        del args[i:i + 2]
        return args, path
    auto = Path("reflexopt.yaml")
    return args, auto if auto.is_file() and args[:1] in (["eval"], ["optimize"]) else None


def default_map(path: Path, group: Any) -> dict[str, Any]:
    """The file as click defaults for the `eval` and `optimize` commands of `group`."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file", fix="check the path given to --config")
    from ..yamlfile import load_yaml  # here, not at import: YAML costs 25 ms of every start-up (--help too)

    try:
        raw = path.read_text(encoding="utf-8-sig")
        data = load_yaml(raw)
    except Exception as e:  # noqa: BLE001 - YAML and decoding errors alike
        raise InputFileError(path, f"not valid YAML ({type(e).__name__})", fix="fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise InputFileError(path, "expected a mapping of option names to values", line=1,
                             fix="write lines such as `model: openai/gpt-4o-mini`")
    text = raw.splitlines()
    commands = group.commands
    names = {cmd: _names(commands[cmd]) for cmd in ("eval", "optimize")}
    out: dict[str, Any] = {}
    for cmd, other in (("eval", "optimize"), ("optimize", "eval")):
        section = {k: v for k, v in data.items() if k not in ("eval", "optimize")}
        section.update(data.get(cmd) or {})
        for key, value in section.items():
            norm = str(key).replace("-", "_")
            name = names[cmd].get(norm)
            if name is None:
                if key not in (data.get(cmd) or {}) and norm in names[other]:
                    continue  # the other command's setting at the top level
                line = next((i for i, ln in enumerate(text, 1) if ln.strip().startswith(f"{key}:")), None)
                raise InputFileError(path, f"unknown setting {key!r}", line=line,
                                     fix=f"use the long option names of `reflexopt {cmd} --help`")
            many = any(p.name == name and (getattr(p, "multiple", False) or getattr(p, "nargs", 1) == -1)
                       for p in commands[cmd].params)
            if many and not isinstance(value, list):  # a repeatable option given once (`track: mlflow`)
                value = [value]
            out.setdefault(cmd, {})[name] = [str(v) for v in value] if isinstance(value, list) else (
                value if isinstance(value, bool) else str(value))
    return out


def _names(command: Any) -> dict[str, str]:
    """A command's settings by the names a config file may use (long option names with `_`, argument names, and
    `data`) -> its parameter names."""
    names = {"data": "dataset"}
    for p in command.params:
        names.update({o.lstrip("-").replace("-", "_"): p.name for o in p.opts if o.startswith("--")})
    for p in command.params:  # an argument's own name wins (`prompt:` is the prompt file, not --prompt)
        if p.param_type_name == "argument" or p.name not in names:
            names[str(p.name)] = str(p.name)
    if "prompts" in names:  # eval's PROMPT... argument: `prompt:` (one file) or `prompts:` (several)
        names["prompt"] = names["prompts"]
    return names
