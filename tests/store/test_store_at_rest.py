"""The embedded store's file: what is (not) in it, keys and rotation, restarts, migrations.

These tests look at the SQLite file with the standard library's ``sqlite3``
(another process's view) and at its raw bytes (an attacker's view).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import re
import sqlite3
import stat
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
import pytest

from interlockd.errors import AlreadyExists, DecryptionError, ResourceExhausted, StoreError
from interlockd.ids import new_id
from interlockd.store.base import (
    LedgerFilter,
    LedgerRow,
    NewEntry,
    NewRun,
    Quotas,
    RotationReport,
)
from interlockd.store.crypto import (
    MasterKeyring,
    WrappedKey,
    blind_terms,
    new_key,
    new_sandbox_keys,
    open_sandbox_keys,
)
from interlockd.store.sqlite import SqliteStore, load_migrations
from interlockd.store.sqlite import engine as sqlite_engine
from interlockd.vocabulary import Usage

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from pathlib import Path

SECRET_WORDS = ("quokka", "Bartholomew", "zucchini", "Überraschung")
MESSAGE = "The quokka named Bartholomew ate zucchini — Überraschung!"
SECRET_VALUE = "sk-ant-api03-quokkaBartholomewZucchini"
SESSION_ID = "sesn_01QuokkaBartholomew"
TITLE = "Bartholomew's zucchini diary"


@contextlib.contextmanager
def raw_db(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the store's file, as another process would open it."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


def file_bytes(db_path: Path) -> bytes:
    """Every byte SQLite keeps for the database: the file, its WAL and shared memory."""
    return b"".join(
        p.read_bytes() for p in sorted(db_path.parent.iterdir()) if p.name.startswith(db_path.name)
    )


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def user_entry(text: str, run_id: str = "run_x") -> NewEntry:
    return NewEntry(kind="user", text=text, run_id=run_id, tokens=len(text.split()))


async def open_store(db_path: Path, key_path: Path) -> SqliteStore:
    store = SqliteStore(db_path, MasterKeyring.load_or_create(key_path))
    await store.open()
    return store


async def test_file_holds_no_plaintext(sqlite_store: SqliteStore, db_path: Path) -> None:
    """Neither the database nor its WAL holds a stored message, a title or a search word."""
    sandbox = await sqlite_store.create_sandbox("acme", Quotas())
    conversation = await sqlite_store.create_conversation(sandbox.id, "alice")
    await sqlite_store.set_conversation_title(sandbox.id, "alice", conversation.id, TITLE)
    await sqlite_store.append_entries(
        sandbox.id,
        conversation.id,
        [
            user_entry(MESSAGE),
            NewEntry("tool_result", '{"pet": "quokka"}', "run_x", 4, tool_call_id="call_1"),
        ],
    )
    assert len(await sqlite_store.search_entries(sandbox.id, "alice", "quokka")) == 2

    raw = file_bytes(db_path)
    assert b"acme" in raw  # the probe works: unsealed metadata is visible
    for word in SECRET_WORDS:
        for form in {word, word.lower(), word.upper()}:
            assert form.encode() not in raw, form
    with raw_db(db_path) as db:
        terms = " ".join(t for (t,) in db.execute("SELECT terms FROM entry_terms"))
    assert terms
    assert all(re.fullmatch(r"[0-9a-f]{16}", t) for t in terms.split())


async def test_sealed_value_moved_to_another_row_fails_to_open(
    sqlite_store: SqliteStore, db_path: Path
) -> None:
    """A sealed text or title copied over another sandbox's or conversation's row won't open."""
    store = sqlite_store
    mine, theirs = [await store.create_sandbox(n, Quotas()) for n in ("mine", "theirs")]
    source = await store.create_conversation(mine.id, "alice")
    neighbour = await store.create_conversation(mine.id, "alice")
    victim = await store.create_conversation(theirs.id, "alice")
    await store.set_conversation_title(mine.id, "alice", source.id, TITLE)
    for sandbox_id, conversation_id in (
        (mine.id, source.id),
        (mine.id, neighbour.id),
        (theirs.id, victim.id),
    ):
        await store.append_entries(
            sandbox_id, conversation_id, [user_entry(f"{MESSAGE} {sandbox_id}")]
        )

    with raw_db(db_path) as db:
        for target in (neighbour.id, victim.id):
            db.execute(
                "UPDATE entries SET text_sealed = (SELECT text_sealed FROM entries "
                "WHERE conversation_id = ? AND seq = 1) WHERE conversation_id = ? AND seq = 1",
                (source.id, target),
            )
        db.execute(
            "UPDATE conversations SET title_sealed = (SELECT title_sealed FROM conversations "
            "WHERE id = ?) WHERE id = ?",
            (source.id, victim.id),
        )

    with pytest.raises(DecryptionError, match="failed to open"):
        await store.read_entries(theirs.id, victim.id)
    with pytest.raises(DecryptionError):
        await store.read_entries(mine.id, neighbour.id)
    with pytest.raises(DecryptionError):
        await store.get_conversation(theirs.id, "alice", victim.id)
    assert (await store.read_entries(mine.id, source.id))[0].text.startswith(MESSAGE)


async def test_rotation_keeps_every_row_readable(db_path: Path, key_path: Path) -> None:
    """After a master and data key rotation, old and new rows open, also in a fresh process."""
    ring = MasterKeyring.load_or_create(key_path)
    store = SqliteStore(db_path, ring)
    await store.open()
    try:
        sandboxes = [await store.create_sandbox(n, Quotas()) for n in ("a", "b")]
        conversations = [await store.create_conversation(s.id, "alice") for s in sandboxes]
        for s, c in zip(sandboxes, conversations, strict=True):
            await store.append_entries(s.id, c.id, [user_entry("written before rotation")])
            await store.set_conversation_title(s.id, "alice", c.id, "old title")

        assert ring.rotate(key_path) == "mk2"
        report = await store.rotate_keys(new_data_keys=True)
        assert report == RotationReport("mk2", data_keys_rewrapped=4, sandboxes_with_new_data_key=2)

        for s, c in zip(sandboxes, conversations, strict=True):
            await store.append_entries(s.id, c.id, [user_entry("written after rotation")])
            texts = [e.text for e in await store.read_entries(s.id, c.id, newest_first=False)]
            assert texts == ["written before rotation", "written after rotation"]
        again = await store.rotate_keys(new_data_keys=False)
        assert again == RotationReport("mk2", 0, 0)
    finally:
        await store.close()

    with raw_db(db_path) as db:
        keys = db.execute(
            "SELECT key_id, kind, master_key_id, is_current FROM data_keys "
            "WHERE sandbox_id = ? ORDER BY key_id",
            (sandboxes[0].id,),
        ).fetchall()
        seal_key_ids = [
            int.from_bytes(sealed[1:5], "big")
            for (sealed,) in db.execute(
                "SELECT text_sealed FROM entries WHERE conversation_id = ? ORDER BY seq",
                (conversations[0].id,),
            )
        ]
    assert keys == [(0, "index", "mk2", 0), (1, "data", "mk2", 0), (2, "data", "mk2", 1)]
    assert seal_key_ids == [1, 2]

    fresh = await open_store(db_path, key_path)
    try:
        for s, c in zip(sandboxes, conversations, strict=True):
            entries = await fresh.read_entries(s.id, c.id, newest_first=False)
            assert [e.text for e in entries] == [
                "written before rotation",
                "written after rotation",
            ]
            assert (await fresh.get_conversation(s.id, "alice", c.id)).title == "old title"
            assert len(await fresh.search_entries(s.id, "alice", "rotation")) == 2
    finally:
        await fresh.close()


async def test_restart_keeps_everything(db_path: Path, key_path: Path) -> None:
    """A store reopened on the same file and key file reads back all it stored."""
    store = await open_store(db_path, key_path)
    try:
        await store.add_operator_key("op-hash")
        sandbox = await store.create_sandbox("acme", Quotas(max_tokens_per_day=1000))
        key = await store.create_api_key(sandbox.id, "ci", "key-hash", "il_")
        conversation = await store.create_conversation(sandbox.id, "alice")
        conversation = await store.set_conversation_title(
            sandbox.id, "alice", conversation.id, TITLE
        )
        run_id = new_id("run")
        run = await store.begin_run(
            NewRun(run_id, sandbox.id, "alice", conversation.id, "fake", "m", "req-1"),
            entries=[user_entry(MESSAGE, run_id)],
        )
        row = LedgerRow(
            run.id, sandbox.id, "alice", "tokens", "fake", "m", Usage(600, 400), 0.5, "v1"
        )
        run = await store.finish_run(
            run.id, status="finished", usage=Usage(600, 400), cost_usd=0.5, ledger=[row]
        )
        conversation = await store.get_conversation(sandbox.id, "alice", conversation.id)
        entries = await store.read_entries(sandbox.id, conversation.id)
    finally:
        await store.close()

    reopened = await open_store(db_path, key_path)
    try:
        assert await reopened.is_operator_key("op-hash")
        assert await reopened.get_sandbox(sandbox.id) == sandbox
        assert await reopened.find_api_key("key-hash") == key
        assert await reopened.get_conversation(sandbox.id, "alice", conversation.id) == conversation
        assert await reopened.read_entries(sandbox.id, conversation.id) == entries
        assert await reopened.get_run(sandbox.id, run.id) == run
        assert await reopened.list_ledger(sandbox.id) == [row]
        assert len(await reopened.search_entries(sandbox.id, "alice", "quokka zucchini")) == 1
        # The day's token count survived too: the quota of 1000 is used up.
        conversation_2 = await reopened.create_conversation(sandbox.id, "alice")
        with pytest.raises(ResourceExhausted, match="max_tokens_per_day"):
            await reopened.begin_run(
                NewRun(new_id("run"), sandbox.id, "alice", conversation_2.id, "fake", "m")
            )
    finally:
        await reopened.close()
    with raw_db(db_path) as db:
        applied = db.execute("SELECT version, name FROM schema_migrations").fetchall()
        assert applied[:6] == [
            (1, "0001_initial.sql"),
            (2, "0002_provider_state.sql"),
            (3, "0003_integrations.sql"),
            (4, "0004_pauses.sql"),
            (5, "0005_agents.sql"),
            (6, "0006_compute.sql"),
        ]
        assert applied == [(m.version, m.name) for m in load_migrations()]


async def test_refused_begin_run_leaves_no_end_user_row(
    sqlite_store: SqliteStore, db_path: Path
) -> None:
    """A refused begin_run creating a conversation for a new end user leaves no row of either."""
    sandbox = await sqlite_store.create_sandbox("acme", Quotas(max_concurrent_runs=1))
    await sqlite_store.begin_run(
        NewRun(new_id("run"), sandbox.id, "alice", new_id("conv"), "fake", "m"),
        create_conversation=True,
    )
    with raw_db(db_path) as db:
        before = [
            db.execute(f"SELECT count(*) FROM {table}").fetchone()
            for table in ("end_users", "conversations", "entries", "entry_terms", "runs")
        ]
    run_id = new_id("run")
    with pytest.raises(ResourceExhausted):
        await sqlite_store.begin_run(
            NewRun(run_id, sandbox.id, "bob", new_id("conv"), "fake", "m"),
            create_conversation=True,
            entries=[user_entry(MESSAGE, run_id)],
        )
    with raw_db(db_path) as db:
        after = [
            db.execute(f"SELECT count(*) FROM {table}").fetchone()
            for table in ("end_users", "conversations", "entries", "entry_terms", "runs")
        ]
    assert before == after == [(1,), (1,), (0,), (0,), (1,)]


async def test_another_master_key_cannot_read(
    db_path: Path, key_path: Path, tmp_path: Path
) -> None:
    """With a different master key, metadata is readable but sealed content is not."""
    store = await open_store(db_path, key_path)
    try:
        sandbox = await store.create_sandbox("acme", Quotas())
        conversation = await store.create_conversation(sandbox.id, "alice")
        await store.append_entries(sandbox.id, conversation.id, [user_entry(MESSAGE)])
    finally:
        await store.close()

    intruder = SqliteStore(db_path, MasterKeyring.load_or_create(tmp_path / "other.key"))
    await intruder.open()
    try:
        assert (await intruder.get_sandbox(sandbox.id)).name == "acme"
        with pytest.raises(StoreError, match="failed to unwrap with master key 'mk1'"):
            await intruder.read_entries(sandbox.id, conversation.id)
    finally:
        await intruder.close()


async def test_delete_sandbox_shreds_its_keys(sqlite_store: SqliteStore, db_path: Path) -> None:
    """Deleting a sandbox removes its wrapped keys and sealed rows from the file's bytes."""
    sandbox = await sqlite_store.create_sandbox("doomed", Quotas())
    conversation = await sqlite_store.create_conversation(sandbox.id, "alice")
    await sqlite_store.append_entries(sandbox.id, conversation.id, [user_entry(MESSAGE)])
    with raw_db(db_path) as db:
        shredded = [w for (w,) in db.execute("SELECT wrapped_key FROM data_keys")]
        shredded += [t for (t,) in db.execute("SELECT text_sealed FROM entries")]
    assert len(shredded) == 3
    assert all(s in file_bytes(db_path) for s in shredded)

    await sqlite_store.delete_sandbox(sandbox.id)

    raw = file_bytes(db_path)
    assert not any(s in raw for s in shredded)
    with raw_db(db_path) as db:
        assert db.execute("SELECT count(*) FROM data_keys").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM entry_terms").fetchone() == (0,)


async def test_database_files_are_private(sqlite_store: SqliteStore, db_path: Path) -> None:
    """The database and its WAL are created readable by their owner only."""
    await sqlite_store.create_sandbox("acme", Quotas())
    files = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
    assert db_path in files
    assert len(files) >= 2  # the WAL is there while the store is open
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


async def test_journal_mode_is_wal(sqlite_store: SqliteStore, db_path: Path) -> None:
    """The file is in WAL mode, so readers never block the writer."""
    with raw_db(db_path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_newer_schema_is_refused(db_path: Path, key_path: Path) -> None:
    """A database migrated by a newer interlockd is refused rather than misread."""
    store = await open_store(db_path, key_path)
    await store.close()
    with raw_db(db_path) as db:
        db.execute("INSERT INTO schema_migrations VALUES (999, '0999_future.sql', 0)")
    later = SqliteStore(db_path, MasterKeyring.load_or_create(key_path))
    with pytest.raises(StoreError, match=r"schema version 999.*upgrade interlockd"):
        await later.open()
    await later.close()


async def test_store_is_usable_after_open_fails(tmp_path: Path, key_path: Path) -> None:
    """A file that isn't a database fails open() with StoreError and leaves nothing open."""
    path = tmp_path / "garbage.db"
    path.write_bytes(b"definitely not sqlite" * 100)
    store = SqliteStore(path, MasterKeyring.load_or_create(key_path))
    with pytest.raises(StoreError, match="cannot open database"):
        await store.open()
    await store.close()


@pytest.mark.parametrize("reads_first", range(12))
async def test_cancelled_write_leaves_the_store_consistent(
    sqlite_store: SqliteStore, reads_first: int
) -> None:
    """An append cancelled at any point is all or nothing, and the next write works."""
    sandbox = await sqlite_store.create_sandbox("acme", Quotas())
    conversation = await sqlite_store.create_conversation(sandbox.id, "alice")
    task = asyncio.create_task(
        sqlite_store.append_entries(
            sandbox.id, conversation.id, [user_entry("one"), user_entry("two")]
        )
    )
    # Let the task start (it is then waiting on BEGIN); each read after that is
    # a round trip through the reader's thread, about as long as one statement
    # of the append: so the cancellation lands after a different step each time.
    await asyncio.sleep(0)
    for _ in range(reads_first):
        await sqlite_store.has_operator_key()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    seqs = await sqlite_store.append_entries(sandbox.id, conversation.id, [user_entry("three")])
    entries = await sqlite_store.read_entries(sandbox.id, conversation.id, newest_first=False)
    assert [e.text for e in entries] in (["three"], ["one", "two", "three"])
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert seqs == [len(entries)]


async def test_env_key_store_needs_no_key_file(tmp_path: Path) -> None:
    """A keyring from configuration works without any key file on disk."""
    ring = MasterKeyring.from_env_value(base64.b64encode(new_key()).decode())
    store = SqliteStore(tmp_path / "env.db", ring)
    await store.open()
    try:
        sandbox = await store.create_sandbox("acme", Quotas())
        conversation = await store.create_conversation(sandbox.id, "alice")
        await store.append_entries(sandbox.id, conversation.id, [user_entry("hello there")])
        assert (await store.read_entries(sandbox.id, conversation.id))[0].text == "hello there"
    finally:
        await store.close()
    assert names_in(tmp_path) == ["env.db"]


# ---- provider state and secrets ---------------------------------------------------


async def test_file_holds_no_secret_or_provider_session_id(
    sqlite_store: SqliteStore, db_path: Path
) -> None:
    """Neither the database nor its WAL holds a secret's value or a provider session id."""
    sandbox = await sqlite_store.create_sandbox("acme", Quotas())
    conversation = await sqlite_store.create_conversation(sandbox.id, "alice")
    await sqlite_store.set_secret(sandbox.id, "anthropic_api_key", SECRET_VALUE)
    await sqlite_store.set_provider_session(sandbox.id, conversation.id, "anthropic", SESSION_ID, 0)
    assert await sqlite_store.get_secret(sandbox.id, "anthropic_api_key") == SECRET_VALUE

    raw = file_bytes(db_path)
    assert b"anthropic_api_key" in raw  # the probe works: names are visible metadata
    for value in (SECRET_VALUE, SESSION_ID, "quokka", "Bartholomew"):
        assert value.encode() not in raw, value


async def test_sealed_secret_or_session_moved_to_another_row_fails_to_open(
    sqlite_store: SqliteStore, db_path: Path
) -> None:
    """A sealed secret copied to another sandbox or name, or a session to another
    conversation or provider, fails to open with DecryptionError."""
    store = sqlite_store
    mine, theirs = [await store.create_sandbox(n, Quotas()) for n in ("mine", "theirs")]
    source, neighbour = [await store.create_conversation(mine.id, "alice") for _ in range(2)]
    for sandbox in (mine, theirs):
        await store.set_secret(sandbox.id, "anthropic_api_key", f"sk-{sandbox.name}")
    await store.set_secret(mine.id, "other_key", "sk-other")
    await store.set_provider_session(mine.id, source.id, "anthropic", SESSION_ID, 1)
    await store.set_provider_session(mine.id, source.id, "google", "sessions/1", 1)
    await store.set_provider_session(mine.id, neighbour.id, "anthropic", "sesn_other", 1)

    with raw_db(db_path) as db:
        db.execute(
            "UPDATE sandbox_secrets SET value_sealed = (SELECT value_sealed FROM sandbox_secrets "
            "WHERE sandbox_id = ? AND name = 'anthropic_api_key') "
            "WHERE (sandbox_id = ? AND name = 'anthropic_api_key') "
            "OR (sandbox_id = ? AND name = 'other_key')",
            (mine.id, theirs.id, mine.id),
        )
        db.execute(
            "UPDATE provider_sessions SET session_id_sealed = (SELECT session_id_sealed "
            "FROM provider_sessions WHERE conversation_id = ? AND provider = 'anthropic') "
            "WHERE conversation_id = ? OR provider = 'google'",
            (source.id, neighbour.id),
        )

    with pytest.raises(DecryptionError, match="failed to open"):
        await store.get_secret(theirs.id, "anthropic_api_key")
    with pytest.raises(DecryptionError):
        await store.get_secret(mine.id, "other_key")
    with pytest.raises(DecryptionError):
        await store.get_provider_session(mine.id, neighbour.id, "anthropic")
    with pytest.raises(DecryptionError):
        await store.get_provider_session(mine.id, source.id, "google")
    assert await store.get_secret(mine.id, "anthropic_api_key") == "sk-mine"
    session = await store.get_provider_session(mine.id, source.id, "anthropic")
    assert session is not None
    assert session.session_id == SESSION_ID


async def test_secrets_survive_master_key_rotation(db_path: Path, key_path: Path) -> None:
    """After a master and data key rotation, secrets and sessions open in a fresh process."""
    ring = MasterKeyring.load_or_create(key_path)
    store = SqliteStore(db_path, ring)
    await store.open()
    try:
        sandbox = await store.create_sandbox("acme", Quotas())
        conversation = await store.create_conversation(sandbox.id, "alice")
        await store.set_secret(sandbox.id, "before", "old key")
        await store.set_provider_session(sandbox.id, conversation.id, "anthropic", SESSION_ID, 3)
        ring.rotate(key_path)
        await store.rotate_keys(new_data_keys=True)
        await store.set_secret(sandbox.id, "after", "new key")
    finally:
        await store.close()

    fresh = await open_store(db_path, key_path)
    try:
        assert await fresh.get_secret(sandbox.id, "before") == "old key"
        assert await fresh.get_secret(sandbox.id, "after") == "new key"
        session = await fresh.get_provider_session(sandbox.id, conversation.id, "anthropic")
        assert session is not None
        assert (session.session_id, session.through_seq) == (SESSION_ID, 3)
    finally:
        await fresh.close()


class PlainWriter:
    """Writes rows as interlockd did before migration 8: sealed content, but end user ids,
    request ids, labels and compute tags in clear. Plain sqlite3 plus crypto's sealing,
    exactly the columns and values the store of that schema wrote."""

    def __init__(self, db: sqlite3.Connection, key_path: Path, sandbox_id: str) -> None:
        rows = db.execute(
            "SELECT key_id, kind, wrapped_key, master_key_id, is_current FROM data_keys "
            "WHERE sandbox_id = ?",
            (sandbox_id,),
        ).fetchall()
        wrapped = [WrappedKey(k, kind, w, m, bool(c)) for k, kind, w, m, c in rows]
        ring = MasterKeyring.load_or_create(key_path)
        self.keys = open_sandbox_keys(ring, sandbox_id, wrapped)
        self.db = db
        self.sandbox_id = sandbox_id
        self.now = int(datetime.now(UTC).timestamp() * 1_000_000)

    def conversation(self, end_user: str, title: str = "", text: str = "", run_id: str = "") -> str:
        conversation_id = new_id("conv")
        sbx, now = self.sandbox_id, self.now
        self.db.execute(
            "INSERT INTO end_users (sandbox_id, id, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (sbx, end_user, now),
        )
        sealed = self.keys.seal(title, table="conversations", row=conversation_id, column="title")
        self.db.execute(
            "INSERT INTO conversations (id, sandbox_id, end_user_id, title_sealed, entry_count, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (conversation_id, sbx, end_user, sealed if title else None, int(bool(text)), now, now),
        )
        if text:
            entry = self.db.execute(
                "INSERT INTO entries (conversation_id, sandbox_id, seq, kind, text_sealed, tokens, "
                "run_id, provider, model, tool_call_id, tool_name, is_error, created_at) "
                "VALUES (?, ?, 1, 'user', ?, 3, ?, 'fake', 'm', '', '', 0, ?)",
                (
                    conversation_id,
                    sbx,
                    self.keys.seal(
                        text, table="entries", row=f"{conversation_id}/1", column="text"
                    ),
                    run_id,
                    now,
                ),
            )
            terms = blind_terms(self.keys.end_user_index_key(end_user), text)
            self.db.execute(
                "INSERT INTO entry_terms (rowid, terms) VALUES (?, ?)",
                (entry.lastrowid, " ".join(terms)),
            )
        return conversation_id

    def run(
        self, run_id: str, conversation_id: str, end_user: str, request_id: str, labels: str
    ) -> None:
        self.db.execute(
            "INSERT INTO runs (id, sandbox_id, end_user_id, conversation_id, provider, model, "
            "request_id, labels, status, started_at, finished_at, input_tokens, output_tokens, "
            "cost_usd) VALUES (?, ?, ?, ?, 'fake', 'm', ?, ?, 'finished', ?, ?, 10, 5, 0.25)",
            (
                run_id,
                self.sandbox_id,
                end_user,
                conversation_id,
                request_id,
                labels,
                self.now,
                self.now,
            ),
        )
        self.db.execute(
            "INSERT INTO ledger (run_id, sandbox_id, end_user_id, kind, provider, model, "
            "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
            "reasoning_tokens, cost_usd, price_version, created_at) "
            "VALUES (?, ?, ?, 'tokens', 'fake', 'm', 10, 5, 0, 0, 0, 0.25, 'v1', ?)",
            (run_id, self.sandbox_id, end_user, self.now),
        )

    def integration(self, end_user: str) -> str:
        integration_id = new_id("int")
        seal = functools.partial(self.keys.seal, table="integrations", row=integration_id)
        self.db.execute(
            "INSERT INTO integrations (id, sandbox_id, kind, app, end_user_id, status, "
            "status_reason, config_sealed, credentials_sealed, created_at, updated_at) "
            "VALUES (?, ?, 'mcp', 'docs', ?, 'active', '', ?, ?, ?, ?)",
            (
                integration_id,
                self.sandbox_id,
                end_user,
                seal("{}", column="config"),
                seal("{}", column="credentials"),
                self.now,
                self.now,
            ),
        )
        return integration_id

    def connect_flow(self, end_user: str) -> str:
        flow_id = new_id("flow")
        verifier = self.keys.seal("v", table="connect_flows", row=flow_id, column="verifier")
        self.db.execute(
            "INSERT INTO connect_flows (id, sandbox_id, app, end_user_id, for_end_user, "
            "state_hash, verifier_sealed, status, reason, integration_id, created_at, "
            "expires_at) VALUES (?, ?, 'github', ?, 1, ?, ?, 'pending', '', '', ?, ?)",
            (flow_id, self.sandbox_id, end_user, f"state-{flow_id}", verifier, self.now, self.now),
        )
        return flow_id

    def compute_session(self, end_user: str, tags: str) -> str:
        session_id = new_id("cs")
        secrets_ = self.keys.seal(
            '{"api_key": "k", "mcp_token": "t"}',
            table="compute_sessions",
            row=session_id,
            column="secrets",
        )
        self.db.execute(
            "INSERT INTO compute_sessions (id, sandbox_id, end_user_id, agent_key, runtime, "
            "provider, status, spec_fingerprint, secrets_sealed, tags, created_at, updated_at, "
            "last_active_at) VALUES (?, ?, ?, 'hermes/m', 'hermes', 'local', 'running', 'fp', "
            "?, ?, ?, ?, ?)",
            (session_id, self.sandbox_id, end_user, secrets_, tags, self.now, self.now, self.now),
        )
        return session_id

    def pause(self, end_user: str) -> None:
        self.db.execute(
            "INSERT INTO pauses (scope, sandbox_id, target, reason, created_at) "
            "VALUES ('end_user', ?, ?, 'abuse', ?)",
            (self.sandbox_id, end_user, self.now),
        )


async def create_at_version(
    db_path: Path, key_path: Path, version: int, names: list[str]
) -> list[str]:
    """A database at schema ``version`` holding new sandboxes of these names; their ids.

    The sandboxes are written as that version's store wrote them (today's store
    writes columns later migrations add): their row and their wrapped keys.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite_engine, "load_migrations", lambda: load_migrations()[:version])
        old = await open_store(db_path, key_path)
        await old.close()
    ring = MasterKeyring.load_or_create(key_path)
    now = int(datetime.now(UTC).timestamp() * 1_000_000)
    ids = []
    with raw_db(db_path) as db:
        for name in names:
            sandbox_id = new_id("sbx")
            db.execute(
                "INSERT INTO sandboxes (id, name, created_at, max_concurrent_runs, "
                "max_concurrent_runs_per_end_user, max_tokens_per_day) VALUES (?, ?, ?, 0, 0, 0)",
                (sandbox_id, name, now),
            )
            for wrapped in new_sandbox_keys(ring, sandbox_id)[1]:
                db.execute(
                    "INSERT INTO data_keys (sandbox_id, key_id, kind, wrapped_key, "
                    "master_key_id, is_current, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        sandbox_id,
                        wrapped.key_id,
                        wrapped.kind,
                        wrapped.wrapped,
                        wrapped.master_key_id,
                        int(wrapped.is_current),
                        now,
                    ),
                )
            ids.append(sandbox_id)
    return ids


async def test_later_migrations_apply_to_a_version_1_database(
    db_path: Path, key_path: Path
) -> None:
    """A database created at schema version 1 gains the provider and integration tables and
    keeps its data."""
    [sandbox_id] = await create_at_version(db_path, key_path, 1, ["acme"])
    with raw_db(db_path) as db:
        conversation_id = PlainWriter(db, key_path, sandbox_id).conversation("alice", TITLE)
        assert db.execute("SELECT version FROM schema_migrations").fetchall() == [(1,)]
        assert not db.execute(
            "SELECT name FROM sqlite_master WHERE name = 'provider_sessions'"
        ).fetchall()

    store = await open_store(db_path, key_path)
    try:
        conversation = await store.get_conversation(sandbox_id, "alice", conversation_id)
        assert (conversation.title, conversation.end_user_id) == (TITLE, "alice")
        await store.append_entries(sandbox_id, conversation_id, [user_entry(MESSAGE)])
        assert [e.text for e in await store.read_entries(sandbox_id, conversation_id)] == [MESSAGE]
        await store.create_integration(
            sandbox_id, kind="mcp", app="docs", end_user_id="", config={}, credentials={}
        )
        await store.set_provider_session(sandbox_id, conversation_id, "anthropic", SESSION_ID, 1)
        await store.put_provider_resource(sandbox_id, "anthropic", "agent", "fp", "agent_1")
        await store.set_secret(sandbox_id, "anthropic_api_key", SECRET_VALUE)
        assert await store.get_secret(sandbox_id, "anthropic_api_key") == SECRET_VALUE
    finally:
        await store.close()
    with raw_db(db_path) as db:
        assert [v for (v,) in db.execute("SELECT version FROM schema_migrations")] == [
            m.version for m in load_migrations()
        ]
        tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {
        "provider_sessions",
        "provider_resources",
        "sandbox_secrets",
        "compute_sessions",
        "placements",
    } <= tables


async def test_provider_resource_locks_do_not_accumulate(sqlite_store: SqliteStore) -> None:
    """The in-process lock table drops a key once nobody holds or awaits it, cancelled waiters
    included."""
    store = sqlite_store
    sandbox = await store.create_sandbox("acme", Quotas())

    async def use(fingerprint: str) -> None:
        async with store.provider_resource_lock(sandbox.id, "anthropic", "agent", fingerprint):
            await asyncio.sleep(0)

    await asyncio.gather(*(use(f"fp-{i % 3}") for i in range(20)))
    assert len(store._resource_locks) == 0

    held, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with store.provider_resource_lock(sandbox.id, "anthropic", "agent", "fp"):
            held.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await held.wait()
    waiter = asyncio.create_task(use("fp"))
    await asyncio.sleep(0.01)
    assert len(store._resource_locks) == 1
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    assert len(store._resource_locks) == 0


async def test_integration_secrets_are_sealed(sqlite_store: SqliteStore, db_path: Path) -> None:
    """Tokens, account logins and PKCE verifiers of integrations never reach the file in clear."""
    sandbox = await sqlite_store.create_sandbox("acme", Quotas())
    await sqlite_store.create_integration(
        sandbox.id,
        kind="oauth",
        app="github",
        end_user_id="alice",
        config={"login": "octocat-login-marker"},
        credentials={"access_token": "ghu_TOKENMARKER", "refresh_token": "ghr_REFRESHMARKER"},
    )
    await sqlite_store.create_connect_flow(
        sandbox.id,
        app="github",
        end_user_id="alice",
        for_end_user=True,
        state_hash="hash",
        code_verifier="VERIFIERMARKER",
        expires_at=datetime.now(UTC),
    )
    raw = file_bytes(db_path)
    for marker in (b"octocat-login-marker", b"TOKENMARKER", b"REFRESHMARKER", b"VERIFIERMARKER"):
        assert marker not in raw


# ---- identifiers the tenant chooses ---------------------------------------------------

#: Distinctive strings in every tenant-chosen identifier and label.
END_USER = "quintessa.Pangolin@example.org"
OTHER_END_USER = "Marzipan-Okapi-42"
REQUEST_ID = "req-Xylophone-4711"
LABELS = {"cohort-Narwhal": "Tangerine-Omega"}
IDENTIFIER_MARKERS = (END_USER, OTHER_END_USER, REQUEST_ID, "Narwhal", "Tangerine", "Pangolin")


def assert_absent(raw: bytes, markers: Iterable[str]) -> None:
    """No marker, in any case, in these bytes (UTF-8 or UTF-16, as SQLite could store text)."""
    for marker in markers:
        for form in {marker, marker.lower(), marker.upper()}:
            assert form.encode() not in raw, form
            assert form.encode("utf-16-le") not in raw, form


async def store_every_identifier(store: SqliteStore, sandbox_id: str) -> dict[str, str]:
    """Write END_USER, OTHER_END_USER, REQUEST_ID and LABELS through every store call that
    keeps an end user, a request id or labels; the ids of what was made."""
    run_id, conversation_id = new_id("run"), new_id("conv")
    await store.begin_run(
        NewRun(
            run_id, sandbox_id, END_USER, conversation_id, "fake", "m", REQUEST_ID, dict(LABELS)
        ),
        create_conversation=True,
        entries=[user_entry(MESSAGE, run_id)],
    )
    ledger = [
        LedgerRow(run_id, sandbox_id, END_USER, "tokens", "fake", "m", Usage(10, 5), 0.25, "v1")
    ]
    await store.finish_run(run_id, status="finished", usage=Usage(10, 5), ledger=ledger)
    integration = await store.create_integration(
        sandbox_id, kind="mcp", app="docs", end_user_id=END_USER, config={}, credentials={}
    )
    flow = await store.create_connect_flow(
        sandbox_id,
        app="github",
        end_user_id=OTHER_END_USER,
        for_end_user=True,
        state_hash=f"state-{sandbox_id}",
        code_verifier="verifier",
        expires_at=datetime.now(UTC),
    )
    session_id = new_id("cs")
    await store.create_compute_session(
        session_id=session_id,
        sandbox_id=sandbox_id,
        end_user_id=END_USER,
        agent_key="hermes/m",
        runtime="hermes",
        provider="local",
        region="",
        spec_fingerprint="fp",
        api_key="k",
        mcp_token="t",
        tags={"user_id": END_USER, "sandbox_id": sandbox_id},
        now=datetime.now(UTC),
    )
    await store.set_pause("end_user", sandbox_id=sandbox_id, target=OTHER_END_USER)
    return {
        "run": run_id,
        "conversation": conversation_id,
        "integration": integration.id,
        "flow": flow.id,
        "compute_session": session_id,
    }


async def test_file_holds_no_tenant_identifier(sqlite_store: SqliteStore, db_path: Path) -> None:
    """End user ids, request ids and labels reach neither the database, its WAL nor its
    shared memory, and every store call still gives them back as they were sent."""
    store = sqlite_store
    sandbox = await store.create_sandbox("acme", Quotas())
    made = await store_every_identifier(store, sandbox.id)

    raw = file_bytes(db_path)
    assert made["run"].encode() in raw  # the probe works: router-made ids are visible
    assert_absent(raw, IDENTIFIER_MARKERS)

    run = await store.find_run_by_request_id(sandbox.id, REQUEST_ID)
    assert run is not None
    assert (run.id, run.end_user_id, run.request_id, run.labels) == (
        made["run"],
        END_USER,
        REQUEST_ID,
        LABELS,
    )
    assert await store.get_run(sandbox.id, run.id) == run
    [row] = await store.list_ledger(sandbox.id)
    assert row.end_user_id == END_USER
    [group] = (await store.summarize_usage(sandbox.id, "end_user", LedgerFilter(), 10, "")).items
    assert (group.key, group.run_count) == (END_USER, 1)
    mine = await store.usage_total(sandbox.id, LedgerFilter(end_user_id=END_USER))
    assert mine.entry_count == 1
    [conversation] = (await store.list_conversations(sandbox.id, END_USER, 10, "")).items
    assert (conversation.id, conversation.end_user_id) == (made["conversation"], END_USER)
    assert len(await store.search_entries(sandbox.id, END_USER, "quokka")) == 1
    [integration] = await store.list_integrations(sandbox.id, end_user_id=END_USER)
    assert (integration.id, integration.end_user_id) == (made["integration"], END_USER)
    assert await store.list_integrations(sandbox.id, end_user_id=OTHER_END_USER) == []
    assert (await store.get_connect_flow(sandbox.id, made["flow"])).end_user_id == OTHER_END_USER
    found = await store.find_connect_flow(f"state-{sandbox.id}")
    assert found is not None
    assert found[0].end_user_id == OTHER_END_USER
    session = await store.find_compute_session(sandbox.id, END_USER, "hermes/m")
    assert session is not None
    assert (session.id, session.end_user_id, session.tags["user_id"]) == (
        made["compute_session"],
        END_USER,
        END_USER,
    )
    [listed] = await store.list_compute_sessions(end_user_id=END_USER)
    assert listed.id == session.id
    assert await store.list_compute_sessions(sandbox.id, end_user_id=OTHER_END_USER) == []
    [pause] = await store.list_pauses(sandbox.id)
    assert (pause.scope, pause.target) == ("end_user", OTHER_END_USER)
    assert await store.clear_pause("end_user", sandbox_id=sandbox.id, target=OTHER_END_USER)

    with raw_db(db_path) as db:
        stored = {u for (u,) in db.execute("SELECT id FROM end_users")}
        (request,) = db.execute("SELECT request_id FROM runs").fetchone()
    assert len(stored) == 2
    assert all(re.fullmatch(r"[0-9a-f]{32}", blind) for blind in (*stored, request))


async def test_a_request_id_is_refused_twice_and_per_sandbox(sqlite_store: SqliteStore) -> None:
    """Blind request ids keep their uniqueness within a sandbox, and another sandbox may
    reuse the same request id (its blind id differs)."""
    store = sqlite_store
    sandboxes = [await store.create_sandbox(n, Quotas()) for n in ("a", "b")]
    for sandbox in sandboxes:
        await store.begin_run(
            NewRun(new_id("run"), sandbox.id, END_USER, new_id("conv"), "fake", "m", REQUEST_ID),
            create_conversation=True,
        )
    with pytest.raises(AlreadyExists, match=REQUEST_ID):
        await store.begin_run(
            NewRun(
                new_id("run"), sandboxes[0].id, END_USER, new_id("conv"), "fake", "m", REQUEST_ID
            ),
            create_conversation=True,
        )
    found = [await store.find_run_by_request_id(s.id, REQUEST_ID) for s in sandboxes]
    assert [run.sandbox_id for run in found if run is not None] == [s.id for s in sandboxes]


async def test_identifier_lookups_use_indexes(sqlite_store: SqliteStore, db_path: Path) -> None:
    """Lookups by blind end user or request id are index searches, never table scans."""
    store = sqlite_store
    sandbox = await store.create_sandbox("acme", Quotas())
    await store_every_identifier(store, sandbox.id)
    lookups = {
        "conversations of an end user": (
            "SELECT id FROM conversations WHERE sandbox_id = ? AND end_user_id = ? "
            "AND (updated_at, id) < (?, ?) ORDER BY updated_at DESC, id DESC LIMIT 10",
            "conversations_by_end_user",
        ),
        "a run by request id": (
            "SELECT id FROM runs WHERE sandbox_id = ? AND request_id = ? AND request_id <> ''",
            "runs_request_id",
        ),
        "running runs of an end user": (
            "SELECT count(*) FROM runs WHERE sandbox_id = ? AND end_user_id = ? "
            "AND status = 'running'",
            "runs_running_by_end_user",
        ),
        "integrations of an end user": (
            "SELECT id FROM integrations WHERE sandbox_id = ? AND end_user_id IN ('', ?)",
            "integrations_by_user",
        ),
        "a compute session by key": (
            "SELECT id FROM compute_sessions WHERE sandbox_id = ? AND end_user_id = ? "
            "AND agent_key = 'k' AND status NOT IN ('destroyed', 'failed')",
            "compute_sessions_by_key",
        ),
        "an end user's sealed id": (
            "SELECT id_sealed FROM end_users WHERE sandbox_id = ? AND id = ?",
            "sqlite_autoindex_end_users_1",
        ),
    }
    with raw_db(db_path) as db:
        for what, (sql, index) in lookups.items():
            params: tuple[object, ...] = (sandbox.id, "0" * 32)
            if "(updated_at, id)" in sql:
                params += (0, "")
            plan = " ".join(str(row[-1]) for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            assert f"USING INDEX {index}" in plan or f"USING COVERING INDEX {index}" in plan, (
                what,
                plan,
            )


async def test_migration_blinds_the_identifiers_of_an_existing_database(
    db_path: Path, key_path: Path
) -> None:
    """A database written before migration 8 (identifiers in clear) is converted on open: no
    end user id, request id, label or tag is left in its files, and everything reads back,
    is found by end user and request id, and is searchable as before."""
    labels = orjson.dumps(LABELS).decode()
    sandbox_id, other_id, gone_id = await create_at_version(
        db_path, key_path, 7, ["acme", "other", "gone"]
    )
    with raw_db(db_path) as db:
        old = PlainWriter(db, key_path, sandbox_id)
        run_id = new_id("run")
        conversation_id = old.conversation(END_USER, TITLE, MESSAGE, run_id)
        old.run(run_id, conversation_id, END_USER, REQUEST_ID, labels)
        integration_id = old.integration(END_USER)
        flow_id = old.connect_flow(OTHER_END_USER)
        session_id = old.compute_session(END_USER, orjson.dumps({"user_id": END_USER}).decode())
        old.pause(OTHER_END_USER)
        # The same end user in another sandbox, and a pause left by a deleted sandbox.
        other = PlainWriter(db, key_path, other_id)
        other_conversation = other.conversation(END_USER, text="the other quokka")
        PlainWriter(db, key_path, gone_id).pause(END_USER)
        db.execute("DELETE FROM sandboxes WHERE id = ?", (gone_id,))
        assert END_USER.encode() in file_bytes(db_path)  # the probe works

    store = await open_store(db_path, key_path)
    try:
        assert_absent(file_bytes(db_path), IDENTIFIER_MARKERS)
        run = await store.find_run_by_request_id(sandbox_id, REQUEST_ID)
        assert run is not None
        assert (run.id, run.end_user_id, run.request_id, run.labels) == (
            run_id,
            END_USER,
            REQUEST_ID,
            LABELS,
        )
        with pytest.raises(AlreadyExists, match=REQUEST_ID):
            await store.begin_run(
                NewRun(
                    new_id("run"), sandbox_id, END_USER, conversation_id, "fake", "m", REQUEST_ID
                )
            )
        conversation = await store.get_conversation(sandbox_id, END_USER, conversation_id)
        assert (conversation.title, conversation.entry_count) == (TITLE, 1)
        assert [
            c.id for c in (await store.list_conversations(sandbox_id, END_USER, 9, "")).items
        ] == [conversation_id]
        [hit] = await store.search_entries(sandbox_id, END_USER, "quokka")
        assert hit.conversation_id == conversation_id
        [hit] = await store.search_entries(other_id, END_USER, "quokka")
        assert hit.conversation_id == other_conversation
        [row] = await store.list_ledger(sandbox_id)
        assert (row.run_id, row.end_user_id) == (run_id, END_USER)
        [group] = (await store.summarize_usage(sandbox_id, "end_user", LedgerFilter(), 9, "")).items
        assert (group.key, group.entry_count) == (END_USER, 1)
        [integration] = await store.list_integrations(sandbox_id, end_user_id=END_USER)
        assert (integration.id, integration.end_user_id) == (integration_id, END_USER)
        assert (await store.get_connect_flow(sandbox_id, flow_id)).end_user_id == OTHER_END_USER
        session = await store.find_compute_session(sandbox_id, END_USER, "hermes/m")
        assert session is not None
        assert (session.id, session.end_user_id, session.tags) == (
            session_id,
            END_USER,
            {"user_id": END_USER},
        )
        assert [(p.sandbox_id, p.target) for p in await store.list_pauses()] == [
            (sandbox_id, OTHER_END_USER)
        ]
        # New writes for a converted end user join its converted rows.
        await store.append_entries(sandbox_id, conversation_id, [user_entry("platypus later")])
        assert len(await store.search_entries(sandbox_id, END_USER, "platypus")) == 1
        second = await store.create_conversation(sandbox_id, END_USER)
        listed = (await store.list_conversations(sandbox_id, END_USER, 9, "")).items
        assert {c.id for c in listed} == {conversation_id, second.id}
    finally:
        await store.close()
    assert_absent(file_bytes(db_path), IDENTIFIER_MARKERS)
    with raw_db(db_path) as db:
        blind = {(s, u) for s, u in db.execute("SELECT sandbox_id, id FROM end_users")}
        columns = {c for (c,) in db.execute("SELECT name FROM pragma_table_info('runs')")}
    assert len(blind) == 3  # END_USER in two sandboxes, unlinkable; OTHER_END_USER
    assert len({u for _, u in blind}) == 3
    assert "labels" not in columns


async def test_migration_with_another_master_key_changes_nothing(
    db_path: Path, key_path: Path, tmp_path: Path
) -> None:
    """Converting identifiers needs the sandboxes' keys: with a master key that cannot open
    them, open fails naming the key and the database is left as it was."""
    [sandbox_id] = await create_at_version(db_path, key_path, 7, ["acme"])
    with raw_db(db_path) as db:
        PlainWriter(db, key_path, sandbox_id).conversation(END_USER, text=MESSAGE)
    before = file_bytes(db_path)
    intruder = SqliteStore(db_path, MasterKeyring.load_or_create(tmp_path / "other.key"))
    with pytest.raises(StoreError, match="failed to unwrap with master key 'mk1'"):
        await intruder.open()
    await intruder.close()
    with raw_db(db_path) as db:
        assert [v for (v,) in db.execute("SELECT version FROM schema_migrations")] == list(
            range(1, 8)
        )
        assert db.execute("SELECT id FROM end_users").fetchall() == [(END_USER,)]
    assert END_USER.encode() in before
