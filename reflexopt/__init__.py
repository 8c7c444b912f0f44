"""reflexopt: evaluate and optimize LLM prompts on your own data, with your own judge."""

from __future__ import annotations

__version__ = "0.1.0"
