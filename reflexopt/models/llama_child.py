"""The embedded model server's process: `python -m reflexopt.models.llama_child PARENT_PID MODULE ARGS...` runs
MODULE (llama-cpp-python's OpenAI-compatible server) with ARGS under a watchdog that exits as soon as its parent
process is gone (its parent id changes), however reflexopt ended: exit, Ctrl-C, SIGTERM or kill -9.
PR_SET_PDEATHSIG is not used: it fires when the *thread* that started the child ends, and reflexopt starts the
server from worker threads (compare, asyncio), which killed a server still in use by other threads.

Run as a module, it imports its package, `reflexopt.models` (its configuration and pydantic, about 0.4 s here),
and nothing else of reflexopt: no litellm, DSPy or Optuna in the server's process.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time
from typing import Any

SERVER_MODULE = "llama_cpp.server"


def watch(parent: int) -> None:  # pragma: no cover - runs in the server's process
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def avoid_amx(lib: Any) -> bool:
    """On a llama.cpp build with ggml's AMX kernels, load models without llama.cpp's extra buffer types (AMX, and
    the weight repacking that shares the switch). A build compiled for an Intel Xeon with AMX (llama-cpp-python
    0.3.36, `pip install` there) crashed with SIGSEGV in `ggml_backend_amx_mul_mat` at the first request on
    SmolLM2's Q4_1 weights, so every call failed; without the extra buffer types the same build answers. A build
    without AMX (any other CPU) is left as it is. True if it changed the defaults."""
    if b"AMX_INT8 = 1" not in lib.llama_print_system_info():
        return False
    if "use_extra_bufts" not in {name for name, *_ in lib.llama_model_params._fields_}:
        return False  # a llama.cpp without the switch: nothing to set
    default = lib.llama_model_default_params

    def params() -> Any:
        p = default()
        p.use_extra_bufts = False
        return p

    lib.llama_model_default_params = params
    return True


def main(argv: list[str]) -> None:  # pragma: no cover - runs in the server's process
    parent, module, *args = argv
    threading.Thread(target=watch, args=(int(parent),), daemon=True).start()
    if module == SERVER_MODULE:
        import llama_cpp.llama_cpp as lib

        avoid_amx(lib)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
