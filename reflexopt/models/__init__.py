"""The model layer: the only package that talks to model providers (through litellm, or directly to
OpenAI-compatible servers).

`get_client(spec, role)` returns a :class:`ModelClient` for a litellm id, `local/NAME` (the embedded
llama.cpp server), or a fake registered with :func:`register_fake`.
"""

from __future__ import annotations

import os
from typing import Any

from ..config import ModelSpec
from ..errors import ModelError
from .base import Backend, ChatResult, Message, Meter, RawReply, TransientError, redact
from .cache import ResponseCache, shared_cache
from .client import ModelClient
from .fake import FakeModel, FunctionModel

__all__ = [
    "Backend", "ChatResult", "FakeModel", "FunctionModel", "Message", "Meter", "ModelClient", "RawReply",
    "ResponseCache", "TransientError", "get_client", "price_per_token", "redact", "register_fake", "spec_price",
    "unregister_fake",
]

_fakes: dict[str, Backend] = {}


def register_fake(model_id: str, backend: Backend) -> None:
    """Make `model_id` resolve to a fake backend (tests, examples)."""
    _fakes[model_id] = backend


def unregister_fake(model_id: str) -> None:
    _fakes.pop(model_id, None)


def resolve_backend(spec: ModelSpec) -> tuple[Backend, str, int]:
    """(backend, stable cache identity, default concurrency) for a model spec."""
    if spec.id in _fakes:
        return _fakes[spec.id], spec.id, 8
    if spec.id.startswith("fake/"):
        raise ModelError(f"unknown model {spec.id!r}: no fake model is registered under that id",
                         fix="register it with reflexopt.models.register_fake, or use a real model id")
    prefix = spec.id.split("/", 1)[0] if "/" in spec.id else ""
    plugin = _backend_plugin(prefix)
    if plugin is not None:  # local/NAME, and any prefix another package registers
        backend, key, conc = plugin(spec)
        return backend, key, int(conc)
    key = spec.id if not spec.api_base else f"{spec.id}@{spec.api_base}"
    if spec.api_base and spec.id.startswith("openai/"):  # an OpenAI-compatible server: the direct transport
        from .openai_compat import OpenAICompatBackend

        return OpenAICompatBackend(spec.id, api_base=spec.api_base, api_key=os.environ.get("OPENAI_API_KEY"),
                                   priced=True), key, 8
    from .litellm_backend import LiteLLMBackend, check_model_id

    check_model_id(spec.id, spec.api_base)
    return LiteLLMBackend(spec.id, api_base=spec.api_base), key, 8


def _backend_plugin(prefix: str) -> Any:
    """The factory registered for a model-id prefix (entry-point group `reflexopt.backends`), or None."""
    from ..plugins import available, load

    if not prefix or prefix not in available("reflexopt.backends"):
        return None
    return load("reflexopt.backends", prefix, what="model backend", fix="reinstall the package that provides it")


def price_per_token(model_id: str) -> tuple[float, float] | None:
    """(input, output) USD per token: litellm's price map; 0 for local models; a fake's own price."""
    fake = _fakes.get(model_id)
    if fake is not None:
        cpt = float(getattr(fake, "cost_per_token", 0.0))
        return (cpt, cpt)
    from .litellm_backend import price_per_token as litellm_price

    return litellm_price(model_id)


def spec_price(spec: ModelSpec) -> tuple[tuple[float, float] | None, str]:
    """(input, output) USD per token for a model as configured, and where the price came from: the model's own
    `price_in`/`price_out` settings (USD per million tokens, from `-m ID@...` or a prices file), 0 for the
    embedded model, else litellm's map. A price per GPU-hour has no per-token price until a throughput converts
    it (compare does, `recommend.row_from_results`): None here."""
    if spec.price_in is not None or spec.price_out is not None:
        return ((spec.price_in or 0.0) / 1e6, (spec.price_out or 0.0) / 1e6), spec.price_from or "model setting"
    if spec.gpu_hour is not None:
        return None, f"${spec.gpu_hour:g} per GPU-hour ({spec.price_from or 'model setting'})"
    if spec.is_local:
        return (0.0, 0.0), "local model"
    price = price_per_token(spec.id)
    if spec.id in _fakes:
        return price, "the fake model's own price"
    return price, "litellm price map" if price is not None else "unknown"


def get_client(spec: ModelSpec, role: str = "task", *, cache: ResponseCache | None | bool = True) -> ModelClient:
    if spec.is_local:  # small local models ramble and sample: make them deterministic and brief by default
        spec = spec.model_copy(update={"temperature": 0.0 if spec.temperature is None else spec.temperature,
                                       "max_tokens": spec.max_tokens or 256})
    backend, key, default_conc = resolve_backend(spec)
    if spec.cache_tag:
        key = f"{key}#{spec.cache_tag}"
    store = shared_cache() if cache is True else (cache or None)
    return ModelClient(spec, backend, cache=store, model_key=key, concurrency=spec.concurrency or default_conc,
                       role=role)
