"""Which store the settings name, and the master key that opens it.

The embedded SQLite file (the default) or a shared PostgreSQL database
(``store_url``). Before a store is used, its master key is proven to open
the keys it holds: a missing or wrong key stops the daemon with a message
naming where the key came from, before anything is written.
"""

from __future__ import annotations

import os

from interlockd.config import Settings
from interlockd.store.base import Store
from interlockd.store.crypto import KeyringError, MasterKeyring
from interlockd.store.postgres import PostgresStore
from interlockd.store.sqlite import SqliteStore, stored_key_samples

MASTER_KEY_ENV = "INTERLOCK_KEYS__MASTER_KEY"


def open_keyring(settings: Settings) -> MasterKeyring:
    """The master keyring of the SQLite store, proven to open every master key id it holds.

    The key file is created only when the store holds no wrapped key: with
    keys stored, a new master key would leave every sandbox unreadable (and
    one created meanwhile unusable with the right key), so a missing or wrong
    key is a KeyringError naming its source, raised before anything is written.
    """
    database = settings.resolve(settings.store.path)
    stored = stored_key_samples(database)
    key_file = settings.resolve(settings.keys.master_key_file)
    if settings.keys.master_key is not None:
        name = MASTER_KEY_ENV if MASTER_KEY_ENV in os.environ else "keys.master_key"
        source = (
            f"the master key in {MASTER_KEY_ENV}"
            if name == MASTER_KEY_ENV
            else "the master key in keys.master_key of the configuration"
        )
        remedy = (
            f"set {name} to the key {database} was created with (or unset it to use {key_file})"
        )
        ring = MasterKeyring.from_env_value(settings.keys.master_key.get_secret_value())
    elif not stored:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return MasterKeyring.load_or_create(key_file)
    else:
        source = f"the master key file {key_file}"
        remedy = (
            f"put back the key file {database} was created with (from your backup), "
            f"or give that key in {MASTER_KEY_ENV}"
        )
        try:
            ring = MasterKeyring.load(key_file)
        except FileNotFoundError:
            held = ", ".join(sorted({w.master_key_id for _, w in stored}))
            raise KeyringError(
                f"{source} is missing, but {database} holds keys wrapped by master key {held}: "
                f"{remedy}. No new key was created: it could not open the stored data"
            ) from None
    try:
        ring.prove_opens(stored)
    except KeyringError as exc:
        raise KeyringError(
            f"{source} does not open the keys stored in {database} ({exc}): {remedy}. "
            "Nothing was written"
        ) from None
    return ring


def shared_keyring(settings: Settings) -> MasterKeyring:
    """The master keyring of a PostgreSQL store: given, never made here.

    Every replica must hold the same key, so one created by whichever
    replica started first would leave the others unable to open its
    sandboxes. The store proves the key against what it holds when it opens.
    """
    if settings.keys.master_key is not None:
        return MasterKeyring.from_env_value(settings.keys.master_key.get_secret_value())
    key_file = settings.resolve(settings.keys.master_key_file)
    try:
        return MasterKeyring.load(key_file)
    except FileNotFoundError:
        raise KeyringError(
            f"a PostgreSQL store needs its master key given to every replica: set "
            f"{MASTER_KEY_ENV} (a fresh one: head -c 32 /dev/urandom | base64) or put the key "
            f"file at {key_file}. None was created: replicas each making their own could "
            "not open each other's sandboxes"
        ) from None


def open_store(settings: Settings) -> Store:
    """The store the settings name, not yet opened."""
    if settings.store_url is not None:
        # Settings checked its scheme.
        url = settings.store_url.get_secret_value()
        return PostgresStore(url, shared_keyring(settings), pool_size=settings.store.pool_size)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteStore(
        settings.resolve(settings.store.path),
        open_keyring(settings),
        synchronous=settings.store.sqlite_synchronous,
    )
