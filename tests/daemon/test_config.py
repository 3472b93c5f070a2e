"""Settings: TOML + INTERLOCK_* environment, unknown keys refused (per provider kind)."""

from __future__ import annotations

from pathlib import Path

import pytest

from interlock.v1 import router_pb2, router_pb2_grpc
from interlockd.config import ConfigError, load_settings
from tests.daemon.process import DaemonProcess, write_config
from tests.fakes.openai import FakeOpenAI


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


# ---- provider tables: one model per kind ------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "key", "value"),
    [
        ("openai", "networking", "limited"),
        ("openai", "reasoning_engine_id", "123"),
        ("local", "base_url", "http://x/v1"),
        ("local", "max_attempts", "2"),
        ("anthropic", "reasoning_engine_id", "123"),
        ("google", "api_key", "sk-x"),
        ("google", "context_size", "4096"),
        ("hermes", "networking", "limited"),
    ],
)
def test_a_provider_refuses_keys_of_other_kinds(kind: str, key: str, value: str) -> None:
    """A provider table accepts only its kind's keys: another kind's key is refused, named."""
    env = {"INTERLOCK_PROVIDERS__P__KIND": kind, f"INTERLOCK_PROVIDERS__P__{key.upper()}": value}
    if kind == "openai":
        env["INTERLOCK_PROVIDERS__P__BASE_URL"] = "http://x/v1"
    with pytest.raises(ConfigError) as raised:
        load_settings(env=env)
    assert str(raised.value) == (
        f"invalid configuration: providers.p.{key}: unknown key (not a setting of kind {kind!r})"
    )


def test_each_kind_keeps_its_own_keys(tmp_path: Path) -> None:
    """The README's provider tables load, each into its kind's settings."""
    config = tmp_path / "interlock.toml"
    config.write_text(
        '[providers.local]\nkind = "local"\ncontext_size = 2048\n'
        '[providers.openai]\nkind = "openai"\nbase_url = "https://api.openai.com/v1"\n'
        'api_key = "sk-..."\ndefault_model = "gpt-4.1-mini"\n'
        'models = { "gpt-4.1-mini" = 1047576 }\nmax_attempts = 4\n'
        '[providers.anthropic]\nkind = "anthropic"\napi_key = "sk-ant-..."\n'
        'default_model = "claude-sonnet-4-6"\ncreates_per_minute = 60\n'
        'networking = "limited"\ntoken_deltas = true\nmax_attempts = 3\n'
        '[providers.google]\nkind = "google"\nproject = "my-project"\n'
        'location = "us-central1"\nreasoning_engine_id = "1234567890"\n'
        'default_model = "gemini-3.1-flash"\ndispatch_token_seconds = 900\n'
        '[providers.nous]\nkind = "hermes"\nbase_url = "http://10.0.0.5:8000/v1"\n'
        'listen_host = "0.0.0.0"\nmax_output_tokens = 1024\n'
    )
    providers = load_settings(config, env={}).providers
    assert {n: p.kind for n, p in providers.items()} | {"hermes": "hermes"} == {
        "local": "local",
        "openai": "openai",
        "anthropic": "anthropic",
        "google": "google",
        "nous": "hermes",
        "hermes": "hermes",
    }
    openai, anthropic, google = providers["openai"], providers["anthropic"], providers["google"]
    assert openai.kind == "openai"
    assert openai.max_attempts == 4
    assert anthropic.kind == "anthropic"
    assert anthropic.networking == "limited"
    assert google.kind == "google"
    assert google.reasoning_engine_id == "1234567890"


def test_a_provider_without_kind_is_refused_naming_the_kinds() -> None:
    """A provider table with no kind (or an unknown one) says which kinds there are."""
    with pytest.raises(ConfigError, match=r"providers\.p\.kind: required, one of openai, local"):
        load_settings(env={"INTERLOCK_PROVIDERS__P__API_KEY": "sk-x"})
    with pytest.raises(ConfigError, match=r"providers\.p\.kind: 'gpt' is not one of openai"):
        load_settings(env={"INTERLOCK_PROVIDERS__P__KIND": "gpt"})


def test_openai_provider_with_empty_base_url_is_refused() -> None:
    """An empty base_url is refused like a missing one, naming the key."""
    env = {"INTERLOCK_PROVIDERS__X__KIND": "openai", "INTERLOCK_PROVIDERS__X__BASE_URL": ""}
    with pytest.raises(ConfigError, match=r"providers\.x\.base_url: is required for kind"):
        load_settings(env=env)


# ---- one key from the environment ---------------------------------------------------------


def test_env_sets_one_key_of_the_builtin_local_provider() -> None:
    """INTERLOCK_PROVIDERS__LOCAL__CONTEXT_SIZE changes the built-in local provider's context
    size; its kind and other keys stay the defaults."""
    settings = load_settings(env={"INTERLOCK_PROVIDERS__LOCAL__CONTEXT_SIZE": "3072"})
    local = settings.providers["local"]
    assert local.kind == "local"
    assert (local.context_size, local.threads) == (3072, 1)


def test_env_sets_one_key_of_a_provider_from_the_file(tmp_path: Path) -> None:
    """A variable overrides one key of a provider table in the file; the rest stays."""
    config = tmp_path / "interlock.toml"
    config.write_text(
        '[providers.local]\nkind = "local"\ncontext_size = 4096\nthreads = 2\n'
        '[providers.fake]\nkind = "openai"\nbase_url = "http://x/v1"\ndefault_model = "m"\n'
    )
    settings = load_settings(
        config,
        env={
            "INTERLOCK_PROVIDERS__LOCAL__CONTEXT_SIZE": "8192",
            "INTERLOCK_PROVIDERS__FAKE__DEFAULT_MODEL": "m-2",
        },
    )
    local, fake = settings.providers["local"], settings.providers["fake"]
    assert local.kind == "local"
    assert (local.context_size, local.threads) == (8192, 2)
    assert fake.kind == "openai"
    assert (fake.base_url, fake.default_model) == ("http://x/v1", "m-2")


def test_env_keys_are_checked_against_the_kind_from_the_file(tmp_path: Path) -> None:
    """A variable naming a key the file's kind does not have is refused, naming it."""
    config = tmp_path / "interlock.toml"
    config.write_text('[providers.fake]\nkind = "openai"\nbase_url = "http://x/v1"\n')
    with pytest.raises(ConfigError, match=r"providers\.fake\.context_size: unknown key"):
        load_settings(config, env={"INTERLOCK_PROVIDERS__FAKE__CONTEXT_SIZE": "8192"})


async def test_the_daemon_process_starts_with_one_provider_key_from_env(
    tmp_path: Path, fake_a: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`interlockd serve` starts with INTERLOCK_PROVIDERS__LOCAL__CONTEXT_SIZE set (once
    `providers.local.kind: Field required`), and a variable overriding one key of a file's
    provider reaches its requests."""
    config = write_config(
        tmp_path / "interlock.toml",
        tmp_path / "data",
        {"fake": {"kind": "openai", "base_url": fake_a.base_url, "default_model": "m"}},
        default_provider="fake",
    )
    monkeypatch.setenv("INTERLOCK_PROVIDERS__LOCAL__CONTEXT_SIZE", "8192")
    monkeypatch.setenv("INTERLOCK_PROVIDERS__FAKE__DEFAULT_MODEL", "m-from-env")
    daemon = DaemonProcess(config)
    try:
        await daemon.start()
        async with daemon.channel() as channel:
            router = router_pb2_grpc.AgentRouterStub(channel)
            request = router_pb2.RunRequest(end_user_id="u", message="hi")
            events = [e async for e in router.Run(request, metadata=daemon.metadata())]
    finally:
        await daemon.kill()
    assert events[-1].HasField("finish")
    assert fake_a.requests[-1].body["model"] == "m-from-env"


def test_store_url_must_be_postgresql_and_an_empty_one_means_sqlite() -> None:
    """store_url takes a postgresql:// URL (the error names the key and the scheme, never the
    password); empty leaves the embedded SQLite store."""
    with pytest.raises(ConfigError, match="store_url") as refused:
        load_settings(env={"INTERLOCK_STORE_URL": "mysql://u:hunter2@db/x"})
    assert "'mysql'" in str(refused.value)
    assert "hunter2" not in str(refused.value)
    assert load_settings(env={"INTERLOCK_STORE_URL": ""}).store_url is None
    url = "postgresql://u:p@db:5432/x"
    settings = load_settings(env={"INTERLOCK_STORE_URL": url})
    assert settings.store_url is not None
    assert settings.store_url.get_secret_value() == url
