"""The price table and the provider registry."""

from __future__ import annotations

import datetime

import pytest

from interlockd.backends import catalog
from interlockd.backends.openai_compat import OpenAICompatibleBackend
from interlockd.backends.registry import BackendRegistry
from interlockd.errors import InvalidArgument
from interlockd.vocabulary import Usage


def test_known_model_has_its_list_price() -> None:
    """gpt-4.1-mini served by provider "openai" is priced from the table."""
    assert catalog.price("openai", "gpt-4.1-mini") == catalog.Price(0.40, 1.60, 0.10, 0.40)


def test_dated_snapshot_is_priced_like_its_alias() -> None:
    """A dated snapshot name costs what its alias costs, and is not confused with a sibling."""
    assert catalog.price("openai", "gpt-4o-mini-2024-07-18") == catalog.price(
        "openai", "gpt-4o-mini"
    )
    assert catalog.price("openai", "gpt-4o-2024-08-06") != catalog.price("openai", "gpt-4o-mini")


def test_local_and_unknown_models_are_free() -> None:
    """The local model and models the table does not know cost nothing."""
    usage = Usage(input_tokens=1_000, output_tokens=1_000)
    assert catalog.cost_usd(catalog.price("local", catalog.LOCAL_MODEL), usage) == 0
    assert catalog.price("my-vllm", "llama-3-8b") == catalog.FREE


def test_override_takes_precedence() -> None:
    """An operator's price for a self-hosted model wins over the table's default."""
    mine = catalog.Price(1.0, 2.0, 0.5, 1.0)
    overrides = {("my-vllm", "llama-3-8b"): mine}
    assert catalog.price("my-vllm", "llama-3-8b", overrides) == mine


def test_cost_bills_cached_input_at_the_cache_rate() -> None:
    """Cached input tokens are billed at the cache-read rate, the rest at the input rate."""
    p = catalog.Price(
        input_per_mtok=2.0, output_per_mtok=8.0, cache_read_per_mtok=0.5, cache_write_per_mtok=2.0
    )
    usage = Usage(input_tokens=1_000_000, output_tokens=500_000, cache_read_tokens=400_000)
    assert catalog.cost_usd(p, usage) == pytest.approx(0.6 * 2.0 + 0.4 * 0.5 + 0.5 * 8.0)


def test_price_table_is_versioned() -> None:
    """The version stored beside every cost is a date."""
    assert datetime.date.fromisoformat(catalog.PRICE_TABLE_VERSION)


@pytest.mark.parametrize(
    ("model", "window", "price"),
    [
        ("claude-opus-4-7", 1_000_000, catalog.Price(5.0, 25.0, 0.5, 6.25)),
        ("claude-sonnet-4-6", 1_000_000, catalog.Price(3.0, 15.0, 0.3, 3.75)),
        ("claude-haiku-4-5", 200_000, catalog.Price(1.0, 5.0, 0.1, 1.25)),
    ],
)
def test_claude_models_have_limits_and_prices(
    model: str, window: int, price: catalog.Price
) -> None:
    """The Managed Agents Claude models are in both tables, with thinking and tools."""
    info = catalog.model_info(model)
    assert info is not None
    assert (info.context_window, info.supports_tools, info.supports_thinking) == (
        window,
        True,
        True,
    )
    assert catalog.price("anthropic", model) == price


async def test_registry_finds_backends_by_provider() -> None:
    """get() returns the backend registered under a provider string."""
    a = OpenAICompatibleBackend("a", "http://127.0.0.1:9/v1")
    b = OpenAICompatibleBackend("b", "http://127.0.0.1:9/v1")
    registry = BackendRegistry([b, a])
    try:
        assert registry.get("a") is a
        assert registry.providers() == ["a", "b"]
        assert "b" in registry
    finally:
        await registry.aclose()
    assert registry.providers() == []


async def test_registry_refuses_unknown_provider_naming_the_configured() -> None:
    """An unknown provider is InvalidArgument on field provider, listing what is configured."""
    registry = BackendRegistry([OpenAICompatibleBackend("a", "http://127.0.0.1:9/v1")])
    try:
        with pytest.raises(InvalidArgument) as info:
            registry.get("x")
    finally:
        await registry.aclose()
    assert info.value.field == "provider"
    assert info.value.message == "provider: unknown provider 'x'; configured providers: a"


async def test_registry_refuses_a_second_backend_for_a_provider() -> None:
    """Registering a provider string twice is a configuration bug, refused at once."""
    first = OpenAICompatibleBackend("a", "http://127.0.0.1:9/v1")
    second = OpenAICompatibleBackend("a", "http://127.0.0.1:9/v1")
    registry = BackendRegistry([first])
    try:
        with pytest.raises(ValueError, match="already registered"):
            registry.register(second)
    finally:
        await registry.aclose()
        await second.aclose()
