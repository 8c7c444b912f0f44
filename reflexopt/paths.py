"""Where reflexopt keeps its files: `REFLEXOPT_HOME`, else ~/.reflexopt."""

from __future__ import annotations

import os
from pathlib import Path


def home_dir() -> Path:
    root = os.environ.get("REFLEXOPT_HOME")
    path = Path(root).expanduser() if root else Path.home() / ".reflexopt"
    path.mkdir(parents=True, exist_ok=True)
    return path
