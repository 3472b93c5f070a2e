"""The embedded store's file: what is (not) in it, keys and rotation, restarts, migrations.

These tests look at the SQLite file with the standard library's ``sqlite3``
(another process's view) and at its raw bytes (an attacker's view).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import sqlite3
import stat
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from interlockd.backends.base import Usage
from interlockd.errors import DecryptionError, ResourceExhausted, StoreError
from interlockd.ids import new_id
from interlockd.store import sqlite as sqlite_module
from interlockd.store.base import LedgerRow, NewEntry, NewRun, Quotas, RotationReport
from interlockd.store.crypto import MasterKeyring, new_key
from interlockd.store.sqlite import SqliteStore, load_migrations

if TYPE_CHECKING:
    from collections.abc import Iterator
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


async def test_later_migrations_apply_to_a_version_1_database(
    db_path: Path, key_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database created at schema version 1 gains the provider and integration tables and
    keeps its data."""
    with monkeypatch.context() as patch:
        patch.setattr(sqlite_module, "load_migrations", lambda: load_migrations()[:1])
        old = await open_store(db_path, key_path)
        try:
            sandbox = await old.create_sandbox("acme", Quotas())
            conversation = await old.create_conversation(sandbox.id, "alice")
            await old.set_conversation_title(sandbox.id, "alice", conversation.id, TITLE)
            conversation = await old.get_conversation(sandbox.id, "alice", conversation.id)
        finally:
            await old.close()
    with raw_db(db_path) as db:
        assert db.execute("SELECT version FROM schema_migrations").fetchall() == [(1,)]
        assert not db.execute(
            "SELECT name FROM sqlite_master WHERE name = 'provider_sessions'"
        ).fetchall()

    store = await open_store(db_path, key_path)
    try:
        assert await store.get_conversation(sandbox.id, "alice", conversation.id) == conversation
        await store.append_entries(sandbox.id, conversation.id, [user_entry(MESSAGE)])
        assert [e.text for e in await store.read_entries(sandbox.id, conversation.id)] == [MESSAGE]
        await store.create_integration(
            sandbox.id, kind="mcp", app="docs", end_user_id="", config={}, credentials={}
        )
        await store.set_provider_session(sandbox.id, conversation.id, "anthropic", SESSION_ID, 1)
        await store.put_provider_resource(sandbox.id, "anthropic", "agent", "fp", "agent_1")
        await store.set_secret(sandbox.id, "anthropic_api_key", SECRET_VALUE)
        assert await store.get_secret(sandbox.id, "anthropic_api_key") == SECRET_VALUE
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
