"""Settings: TOML + INTERLOCK_* environment, unknown keys refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from interlockd.config import ConfigError, load_settings


def test_defaults_need_no_file_and_no_keys() -> None:
    """With nothing configured the daemon runs the local provider on 127.0.0.1:7600."""
    settings = load_settings(env={})
    assert settings.listen == "127.0.0.1:7600"
    assert settings.default_provider == "local"
    assert settings.providers["local"].kind == "local"


def test_env_overrides_file(tmp_path: Path) -> None:
    """Environment variables override the TOML file, nested keys with a double underscore."""
    config = tmp_path / "interlock.toml"
    config.write_text(
        'listen = "127.0.0.1:9000"\n[runs]\nmax_message_bytes = 10\n'
        '[providers.openai]\nkind = "openai"\nbase_url = "http://x/v1"\n'
    )
    settings = load_settings(
        config,
        env={
            "INTERLOCK_RUNS__MAX_MESSAGE_BYTES": "20",
            "INTERLOCK_PROVIDERS__OPENAI__API_KEY": "sk-secret",
            "INTERLOCK_API_KEY": "client-side, ignored by the daemon",
        },
    )
    assert settings.listen == "127.0.0.1:9000"
    assert settings.runs.max_message_bytes == 20
    key = settings.providers["openai"].api_key
    assert key is not None
    assert key.get_secret_value() == "sk-secret"
    assert "sk-secret" not in repr(settings)


def test_unknown_file_key_is_refused(tmp_path: Path) -> None:
    """A misspelt key in the file fails at start, naming it."""
    config = tmp_path / "interlock.toml"
    config.write_text("[runs]\nmax_mesage_bytes = 10\n")
    with pytest.raises(ConfigError, match=r"runs\.max_mesage_bytes: unknown key"):
        load_settings(config, env={})


def test_unknown_env_key_is_refused() -> None:
    """A misspelt INTERLOCK_ variable fails at start instead of being ignored."""
    with pytest.raises(ConfigError, match="lissten: unknown key"):
        load_settings(env={"INTERLOCK_LISSTEN": "127.0.0.1:1"})


def test_bad_value_names_the_key() -> None:
    """A value of the wrong type is refused with the key's dotted name."""
    with pytest.raises(ConfigError, match=r"runs\.max_tool_iterations"):
        load_settings(env={"INTERLOCK_RUNS__MAX_TOOL_ITERATIONS": "many"})


def test_default_provider_must_exist() -> None:
    """default_provider must name a configured provider."""
    with pytest.raises(ConfigError, match="default_provider"):
        load_settings(env={"INTERLOCK_DEFAULT_PROVIDER": "nope"})


def test_openai_provider_needs_base_url() -> None:
    """An OpenAI-compatible provider without base_url is refused."""
    with pytest.raises(ConfigError, match=r"providers\.x\.base_url"):
        load_settings(env={"INTERLOCK_PROVIDERS__X__KIND": "openai"})
