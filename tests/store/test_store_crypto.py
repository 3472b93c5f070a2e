"""Envelope encryption: the master key file, wrapping, sealing and blind search terms."""

from __future__ import annotations

import base64
import os
import re
import stat
from typing import TYPE_CHECKING

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlockd.errors import DecryptionError
from interlockd.store.crypto import (
    MAX_TERMS_PER_ENTRY,
    KeyCache,
    KeyringError,
    MasterKeyring,
    SandboxKeys,
    blind_terms,
    new_key,
    new_sandbox_keys,
    open_sandbox_keys,
)

if TYPE_CHECKING:
    from pathlib import Path

_PLACE = {"table": "entries", "row": "conv_1/1", "column": "text"}


def keys_for(sandbox_id: str = "sbx_a") -> SandboxKeys:
    return SandboxKeys(sandbox_id, {1: new_key()}, 1, new_key())


# ---- the master key file ----------------------------------------------------------


def test_key_file_is_created_0600(key_path: Path) -> None:
    """The first load creates the key file private to its owner, with one current key."""
    ring = MasterKeyring.load_or_create(key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert ring.current_id == "mk1"
    assert MasterKeyring.load_or_create(key_path).key_ids == {"mk1"}
    assert [p.name for p in key_path.parent.iterdir()] == [key_path.name]


def test_key_file_readable_by_others_is_refused(key_path: Path) -> None:
    """A key file that group or others can read is refused with a chmod hint."""
    MasterKeyring.load_or_create(key_path)
    key_path.chmod(0o640)
    with pytest.raises(KeyringError, match=r"mode 0640.*chmod 600"):
        MasterKeyring.load_or_create(key_path)


def test_malformed_key_file_is_refused(key_path: Path) -> None:
    """A key file that isn't the keyring JSON is refused, not overwritten."""
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"not json")
    os.close(fd)
    with pytest.raises(KeyringError, match="malformed"):
        MasterKeyring.load_or_create(key_path)
    assert key_path.read_bytes() == b"not json"


def test_rotate_adds_a_current_key_and_keeps_the_old(key_path: Path) -> None:
    """Rotation makes mk2 current, keeps mk1 for old wraps, and keeps the file 0600."""
    ring = MasterKeyring.load_or_create(key_path)
    old = ring.wrap(new_key(), sandbox_id="sbx_a", kind="data", key_id=1)
    assert ring.rotate(key_path) == "mk2"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    reloaded = MasterKeyring.load_or_create(key_path)
    assert (reloaded.current_id, reloaded.key_ids) == ("mk2", {"mk1", "mk2"})
    reloaded.unwrap(old, sandbox_id="sbx_a")
    assert (
        reloaded.wrap(new_key(), sandbox_id="sbx_a", kind="data", key_id=2).master_key_id == "mk2"
    )


def test_rotate_keeps_keys_added_by_another_process(key_path: Path) -> None:
    """Rotating from a stale keyring merges the file's keys instead of dropping them."""
    first = MasterKeyring.load_or_create(key_path)
    stale = MasterKeyring.load_or_create(key_path)
    first.rotate(key_path)
    assert stale.rotate(key_path) == "mk3"
    assert MasterKeyring.load_or_create(key_path).key_ids == {"mk1", "mk2", "mk3"}


def test_env_master_key() -> None:
    """A master key from configuration is base64 of 32 bytes, has id 'env', and can't rotate."""
    ring = MasterKeyring.from_env_value(base64.b64encode(new_key()).decode())
    assert ring.current_id == "env"
    with pytest.raises(KeyringError, match="32"):
        MasterKeyring.from_env_value(base64.b64encode(b"short").decode())
    with pytest.raises(KeyringError, match="base64"):
        MasterKeyring.from_env_value("not base64!")


def test_env_master_key_is_never_written(tmp_path: Path) -> None:
    """Rotating an environment-given keyring is refused, so the key never lands in a file."""
    ring = MasterKeyring.from_env_value(base64.b64encode(new_key()).decode())
    with pytest.raises(KeyringError, match="at its source"):
        ring.rotate(tmp_path / "master.key")
    assert list(tmp_path.iterdir()) == []


def test_reprs_hold_no_key_material(key_path: Path) -> None:
    """Key holders print ids only, never a key in any encoding."""
    ring = MasterKeyring.load_or_create(key_path)
    master = orjson.loads(key_path.read_bytes())["keys"]["mk1"]
    data, index = new_key(), new_key()
    keys = SandboxKeys("sbx_a", {1: data}, 1, index)
    for text in (repr(ring), repr(keys)):
        assert master not in text
        for key in (data, index):
            assert key.hex() not in text
            assert base64.b64encode(key).decode() not in text


# ---- wrapping ---------------------------------------------------------------------


def test_wrapped_key_is_bound_to_its_sandbox(key_path: Path) -> None:
    """A wrapped key row moved to another sandbox fails to unwrap."""
    ring = MasterKeyring.load_or_create(key_path)
    keys, wrapped = new_sandbox_keys(ring, "sbx_a")
    assert open_sandbox_keys(ring, "sbx_a", wrapped).current_key_id == keys.current_key_id
    with pytest.raises(KeyringError, match="failed to unwrap"):
        open_sandbox_keys(ring, "sbx_b", wrapped)


def test_unwrap_with_the_wrong_master_key(key_path: Path) -> None:
    """Keys wrapped by a master key the keyring lacks fail with a clear error."""
    ring = MasterKeyring.load_or_create(key_path)
    _, wrapped = new_sandbox_keys(ring, "sbx_a")
    other = MasterKeyring.from_env_value(base64.b64encode(new_key()).decode())
    with pytest.raises(KeyringError, match="does not hold"):
        open_sandbox_keys(other, "sbx_a", wrapped)


# ---- sealing ----------------------------------------------------------------------


def test_sealed_value_is_bound_to_its_place() -> None:
    """A sealed value opens only for the sandbox, table, row and column it was sealed for."""
    keys = keys_for()
    sealed = keys.seal("secret", **_PLACE)
    assert keys.open(sealed, **_PLACE) == "secret"
    for moved in ({"table": "conversations"}, {"row": "conv_1/2"}, {"column": "title"}):
        with pytest.raises(DecryptionError, match="failed to open"):
            keys.open(sealed, **{**_PLACE, **moved})
    twin = SandboxKeys("sbx_b", {1: new_key()}, 1, new_key())
    with pytest.raises(DecryptionError):
        twin.open(sealed, **_PLACE)


def test_tampered_sealed_value_fails() -> None:
    """Flipping any bit of a sealed value makes it fail to open."""
    keys = keys_for()
    sealed = bytearray(keys.seal("secret", **_PLACE))
    for index in (0, 3, 5, 17, len(sealed) - 1):
        altered = bytearray(sealed)
        altered[index] ^= 0x01
        with pytest.raises(DecryptionError):
            keys.open(bytes(altered), **_PLACE)
    with pytest.raises(DecryptionError, match="too short"):
        keys.open(b"\x01", **_PLACE)


def test_old_data_keys_keep_opening_after_rotation() -> None:
    """Values sealed with an older data key open once a newer key is current."""
    old_key, new = new_key(), new_key()
    index = new_key()
    before = SandboxKeys("sbx_a", {1: old_key}, 1, index)
    sealed_old = before.seal("old", **_PLACE)
    after = SandboxKeys("sbx_a", {1: old_key, 2: new}, 2, index)
    sealed_new = after.seal("new", **_PLACE)
    assert sealed_new[1:5] == (2).to_bytes(4, "big")
    assert after.open(sealed_old, **_PLACE) == "old"
    assert after.open(sealed_new, **_PLACE) == "new"
    with pytest.raises(DecryptionError, match="data key 2"):
        before.open(sealed_new, **_PLACE)


_KEYS = keys_for()


@settings(max_examples=200, deadline=None, database=None)
@given(text=st.text())
def test_seal_open_round_trip(text: str) -> None:
    """Any unicode text comes back exactly, and its ciphertext never contains it."""
    sealed = _KEYS.seal(text, **_PLACE)
    assert _KEYS.open(sealed, **_PLACE) == text
    assert len(sealed) == 1 + 4 + 12 + len(text.encode()) + 16
    if len(text.encode()) >= 8:
        assert text.encode() not in sealed


# ---- blind terms ------------------------------------------------------------------


def test_blind_terms_shape() -> None:
    """Terms are 16 hex chars per distinct lowercased word of 2+ characters, in order."""
    key = new_key()
    terms = blind_terms(key, "Hello, hello WORLD! a b Ünïcode_1 ü")
    assert len(terms) == 3
    assert all(re.fullmatch(r"[0-9a-f]{16}", t) for t in terms)
    assert terms == blind_terms(key, "hello world ünïcode_1")
    assert terms[1] == blind_terms(key, "World")[0]
    assert blind_terms(new_key(), "hello") != blind_terms(key, "hello")
    assert blind_terms(key, "a ? !") == []


def test_blind_terms_are_capped() -> None:
    """One huge entry indexes at most MAX_TERMS_PER_ENTRY distinct words."""
    text = " ".join(f"word{i}" for i in range(MAX_TERMS_PER_ENTRY * 2))
    assert len(blind_terms(new_key(), text)) == MAX_TERMS_PER_ENTRY


def test_end_user_index_keys_differ() -> None:
    """The same word hashes differently for two end users of one sandbox."""
    keys = keys_for()
    alice = blind_terms(keys.end_user_index_key("alice"), "tuna")
    bob = blind_terms(keys.end_user_index_key("bob"), "tuna")
    assert alice != bob
    assert alice == blind_terms(keys.end_user_index_key("alice"), "TUNA")


def test_blind_ids_are_per_sandbox_and_kind() -> None:
    """A blind id is 32 hex characters, stable within a sandbox, and differs across sandboxes,
    across kinds of identifier, and from the end user's search key."""
    keys = keys_for()
    alice = keys.blind_id("end_user", "alice")
    assert re.fullmatch(r"[0-9a-f]{32}", alice)
    assert alice == keys.blind_id("end_user", "alice")
    assert alice != keys.blind_id("end_user", "Alice")
    assert alice != keys_for().blind_id("end_user", "alice")
    assert alice != keys.blind_id("request_id", "alice")
    assert alice not in keys.end_user_index_key("alice").hex()


# ---- the key cache ----------------------------------------------------------------


def test_key_cache_evicts_least_recently_used() -> None:
    """The cache keeps its capacity, dropping the least recently used sandbox first."""
    cache = KeyCache(capacity=2)
    a, b, c = keys_for("a"), keys_for("b"), keys_for("c")
    cache.put(a)
    cache.put(b)
    assert cache.get("a") is a
    cache.put(c)
    assert cache.get("b") is None
    assert cache.get("a") is a
    assert cache.get("c") is c
    cache.evict("a")
    assert cache.get("a") is None
