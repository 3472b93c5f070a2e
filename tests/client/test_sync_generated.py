"""The blocking client is generated from the asyncio one, so the two offer the same calls."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from types import ModuleType

import interlock
from interlock import client, sync

GENERATOR = Path(__file__).resolve().parents[2] / "clients/python/tools/generate_sync.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_sync", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sync_py_is_what_the_generator_makes_of_client_py() -> None:
    """interlock/sync.py is exactly generate_sync.py's output for interlock/client.py: an edit
    of client.py without regenerating, or a hand edit of sync.py, fails here."""
    generator = _generator()
    assert sync.__file__ is not None
    committed = Path(sync.__file__).read_text(encoding="utf-8")
    assert committed == generator.generate(), (
        "interlock/sync.py is stale: run .venv/bin/python clients/python/tools/generate_sync.py"
    )


def test_every_async_call_has_a_blocking_twin_with_the_same_parameters() -> None:
    """Each public method of Client and its services exists on the Sync class with the same
    parameters, defaults and kinds (what a caller writes works on both)."""
    generator = _generator()
    for async_name, sync_name in generator.CLASSES.items():
        async_class, sync_class = getattr(client, async_name), getattr(sync, sync_name)
        public = [n for n in vars(async_class) if not n.startswith("_") or n == "__init__"]
        assert public, async_name
        for name in public:
            async_member, sync_member = vars(async_class)[name], vars(sync_class).get(name)
            assert sync_member is not None, f"{sync_name}.{name} is missing"
            if isinstance(async_member, property):
                assert isinstance(sync_member, property), f"{sync_name}.{name}"
                continue
            expected = inspect.signature(async_member).parameters
            got = inspect.signature(sync_member).parameters
            assert [(p.name, p.kind, p.default) for p in got.values()] == [
                (p.name, p.kind, p.default) for p in expected.values()
            ], f"{sync_name}.{name}"


def test_the_blocking_stream_and_classes_keep_their_public_names() -> None:
    """interlock and interlock.sync still export every Sync class, the stream included."""
    for name in sync.__all__:
        assert getattr(interlock, name) is getattr(sync, name)
    assert sync.SyncClient.run.__annotations__["return"] == "SyncRunStream"
