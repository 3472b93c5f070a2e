"""What the daemon knows about models without asking a provider: limits and prices.

Owns two tables:

- **Capabilities** (:func:`model_info`): context window, output cap and
  features of well-known models, used when a provider's configuration does not
  list the model itself.
- **Prices** (:func:`price`, :func:`cost_usd`): list prices per million tokens.
  The table is versioned: :data:`PRICE_TABLE_VERSION` is stored beside every
  cost the daemon records, so a ledger row always says which prices made it.
  Change a price → change the version.

Models the table does not know (self-hosted OpenAI-compatible servers, the
local model) cost 0 unless the operator supplies an override. This module
never calls a provider and knows nothing of the store.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from interlockd.vocabulary import ModelInfo, Usage

#: Version of :data:`_PRICES`. Bump it with every change of a price.
PRICE_TABLE_VERSION = "2026-11-23"

#: The zero-credential local model (see ``backends/local.py``).
LOCAL_MODEL = "smollm2-135m"


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens of each kind."""

    input_per_mtok: float
    output_per_mtok: float
    cache_read_per_mtok: float
    cache_write_per_mtok: float


FREE = Price(0.0, 0.0, 0.0, 0.0)

# OpenAI list prices (standard tier, USD per 1M tokens), as published on
# openai.com/api/pricing; checked 2025-06. OpenAI charges no premium for cache
# writes (caching is automatic), so a cache write costs the input price.
_OPENAI_PRICES: dict[str, Price] = {
    "gpt-4.1": Price(2.00, 8.00, 0.50, 2.00),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10, 0.40),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.025, 0.10),
    "gpt-4o": Price(2.50, 10.00, 1.25, 2.50),
    "gpt-4o-mini": Price(0.15, 0.60, 0.075, 0.15),
}

# Anthropic list prices (USD per 1M tokens), from the models overview of
# platform.claude.com; checked 2026-11. Cache writes are the 5-minute rate
# (1.25x input), cache reads 0.1x input.
_ANTHROPIC_PRICES: dict[str, Price] = {
    "claude-opus-4-7": Price(5.00, 25.00, 0.50, 6.25),
    "claude-sonnet-4-6": Price(3.00, 15.00, 0.30, 3.75),
    "claude-haiku-4-5": Price(1.00, 5.00, 0.10, 1.25),
}

# Gemini list prices on Vertex AI (USD per 1M tokens, prompts up to 200k
# tokens), from cloud.google.com/vertex-ai/generative-ai/pricing; checked
# 2026-11. Implicit caching: no write premium; cache reads 0.1x input.
_GEMINI_PRICES: dict[str, Price] = {
    "gemini-3.1-pro": Price(2.00, 12.00, 0.20, 2.00),
    "gemini-3.1-flash": Price(0.50, 3.00, 0.05, 0.50),
}

# Keyed by (provider string, model). The provider string is the configured
# name, so these entries apply to a provider configured as "openai".
_PRICES: dict[tuple[str, str], Price] = {
    **{("openai", model): p for model, p in _OPENAI_PRICES.items()},
    **{("anthropic", model): p for model, p in _ANTHROPIC_PRICES.items()},
    **{("google", model): p for model, p in _GEMINI_PRICES.items()},
    ("local", LOCAL_MODEL): FREE,
}

# Published limits (same source and date as the prices). The local model's
# window is what its server is launched with; 8192 is what it was trained on.
_MODELS: dict[str, ModelInfo] = {
    "gpt-4.1": ModelInfo(context_window=1_047_576, max_output_tokens=32_768),
    "gpt-4.1-mini": ModelInfo(context_window=1_047_576, max_output_tokens=32_768),
    "gpt-4.1-nano": ModelInfo(context_window=1_047_576, max_output_tokens=32_768),
    "gpt-4o": ModelInfo(context_window=128_000, max_output_tokens=16_384),
    "gpt-4o-mini": ModelInfo(context_window=128_000, max_output_tokens=16_384),
    LOCAL_MODEL: ModelInfo(context_window=8192, max_output_tokens=512, supports_tools=False),
    "claude-opus-4-7": ModelInfo(
        context_window=1_000_000, max_output_tokens=128_000, supports_thinking=True
    ),
    "claude-sonnet-4-6": ModelInfo(
        context_window=1_000_000, max_output_tokens=64_000, supports_thinking=True
    ),
    "claude-haiku-4-5": ModelInfo(
        context_window=200_000, max_output_tokens=64_000, supports_thinking=True
    ),
    "gemini-3.1-pro": ModelInfo(
        context_window=1_048_576, max_output_tokens=65_536, supports_thinking=True
    ),
    "gemini-3.1-flash": ModelInfo(
        context_window=1_048_576, max_output_tokens=65_536, supports_thinking=True
    ),
}

# Dated snapshots ("gpt-4o-mini-2024-07-18") are priced like their alias.
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def _base_name(model: str) -> str:
    return _SNAPSHOT.sub("", model)


def model_info(model: str) -> ModelInfo | None:
    """Published limits of a well-known model, or None when the table has no entry."""
    return _MODELS.get(model) or _MODELS.get(_base_name(model))


def known_models(prefix: str = "") -> list[str]:
    """The models of the capability table whose names start with ``prefix``, sorted."""
    return sorted(m for m in _MODELS if m.startswith(prefix))


def price(
    provider: str,
    model: str,
    overrides: Mapping[tuple[str, str], Price] | None = None,
) -> Price:
    """The price of ``model`` served by ``provider``; :data:`FREE` when unknown.

    ``overrides`` (keyed like the table, by provider string and model) take
    precedence, e.g. prices an operator configured for a self-hosted server.
    """
    for name in (model, _base_name(model)):
        key = (provider, name)
        if overrides is not None and key in overrides:
            return overrides[key]
        if key in _PRICES:
            return _PRICES[key]
    return FREE


def cost_usd(p: Price, usage: Usage) -> float:
    """USD cost of ``usage`` at price ``p``.

    ``usage.input_tokens`` includes cached tokens (see :class:`Usage`), so cache
    reads and writes are billed at their own rates and only the rest at the
    input rate. Reasoning tokens are part of the output tokens.
    """
    uncached = max(usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens, 0)
    return (
        uncached * p.input_per_mtok
        + usage.cache_read_tokens * p.cache_read_per_mtok
        + usage.cache_write_tokens * p.cache_write_per_mtok
        + usage.output_tokens * p.output_per_mtok
    ) / 1_000_000
