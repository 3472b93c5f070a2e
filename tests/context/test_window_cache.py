"""The window cache: the same context as reading the store, from only what changed, never stale."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from interlockd.context.cache import configure_window_cache, window_cache
from interlockd.context.window import AssembledContext, Budget, assemble
from interlockd.errors import NotFound
from interlockd.ids import new_id
from interlockd.store.base import EntryKind, NewEntry, NewRun, Quotas
from interlockd.store.crypto import MasterKeyring
from interlockd.store.postgres import PostgresStore
from interlockd.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from interlockd.store.base import Store


def _entry(kind: EntryKind, text: str, run_id: str, call: str = "") -> NewEntry:
    return NewEntry(
        kind=kind,
        text=text,
        run_id=run_id,
        tokens=len(text.split()) * 2,
        tool_call_id=call,
        tool_name="lookup" if call else "",
    )


async def _both(
    store: Store, sandbox_id: str, conversation_id: str, *, total: int, tools: bool, after: int
) -> AssembledContext:
    """Assemble cached and direct; fail unless they agree; the cached one."""
    contexts = [
        await assemble(
            store,
            sandbox_id,
            conversation_id,
            system="be brief",
            budget=Budget(total),
            tool_messages=tools,
            after_seq=after,
            cached=cached,
        )
        for cached in (True, False)
    ]
    assert contexts[0] == contexts[1], (total, tools, after)
    return contexts[0]


class _History:
    """A conversation grown by random turns through the store's own calls."""

    def __init__(self, store: Store, sandbox_id: str, rng: random.Random) -> None:
        self.store, self.sandbox_id, self.rng = store, sandbox_id, rng
        self.conversation_id = ""

    async def step(self) -> None:
        rng = self.rng
        run = NewRun(
            id=new_id("run"),
            sandbox_id=self.sandbox_id,
            end_user_id="alice",
            conversation_id=self.conversation_id or new_id("conv"),
            provider="fake",
            model="fake-model",
            request_id=new_id("req"),
        )
        words = " ".join(
            rng.choice(("alpha", "beta", "gamma", "δέλτα")) for _ in range(rng.randint(1, 30))
        )
        kind: EntryKind = "summary" if rng.random() < 0.1 else "user"
        await self.store.begin_run(
            run,
            create_conversation=not self.conversation_id,
            entries=[_entry(kind, words, run.id)],
        )
        created = not self.conversation_id
        self.conversation_id = run.conversation_id
        if rng.random() < 0.5:  # the turn's own context, as a run assembles it
            await _both(
                self.store,
                self.sandbox_id,
                self.conversation_id,
                total=rng.choice((50, 100_000)),
                tools=True,
                after=0,
            )
        if rng.random() < 0.15:  # taken back: the user message goes, its seq is reused
            await self.store.finish_run(run.id, status="failed", withdraw=True)
            if created:  # and a conversation it started goes with it
                self.conversation_id = ""
            return
        entries: list[NewEntry] = []
        for i in range(rng.randint(0, 3)):
            call = f"call_{run.id}_{i}"
            entries.append(_entry("assistant", f"checking {i}", run.id))
            entries.append(_entry("tool_call", '{"q": "' + words[:20] + '"}', run.id, call))
            if rng.random() < 0.8:  # otherwise interrupted: no result
                entries.append(_entry("tool_result", f"result {i} {words}", run.id, call))
        if rng.random() < 0.5:
            # Part of the turn lands before the run ends (announced tool calls do).
            split = rng.randint(0, len(entries))
            if entries[:split]:
                await self.store.append_entries(
                    self.sandbox_id, self.conversation_id, entries[:split]
                )
            entries = entries[split:]
        entries.append(_entry("assistant", f"answer {words}", run.id))
        await self.store.finish_run(run.id, status="finished", entries=entries)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "db.sqlite", MasterKeyring.load_or_create(tmp_path / "key"))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.mark.parametrize("seed", range(6))
async def test_cached_assembly_equals_direct_over_random_histories(
    sqlite_store: SqliteStore, seed: int
) -> None:
    """Over random turns (tool calls, results, interrupted calls, summaries, withdrawn messages)
    and random budgets, after_seq and renderings, the cached context equals the direct one."""
    rng = random.Random(seed)
    sandbox = await sqlite_store.create_sandbox("s", Quotas())
    if seed % 2:
        # A small cache: conversations evicted and read again between turns.
        configure_window_cache(sqlite_store, max_bytes=6_000)
    histories = [_History(sqlite_store, sandbox.id, rng) for _ in range(3)]
    for _ in range(60):
        history = rng.choice(histories)
        await history.step()
        if not history.conversation_id:
            continue
        count = (
            await sqlite_store.get_conversation(sandbox.id, "alice", history.conversation_id)
        ).entry_count
        for _ in range(rng.choice((0, 1, 3))):
            total = rng.choice((-1, 0, 10, 60, 200, 1_000, 100_000))
            after = rng.choice((0, 0, rng.randint(0, count), count))
            await _both(
                sqlite_store,
                sandbox.id,
                history.conversation_id,
                total=total,
                tools=rng.random() < 0.5,
                after=after,
            )
    cache = window_cache(sqlite_store)
    assert cache is not None
    assert cache.held_bytes <= cache.max_bytes


async def test_a_turn_opens_only_the_entries_appended_since_the_last(
    sqlite_store: SqliteStore,
) -> None:
    """With a long history cached, the next turn's context opens just its new entries."""
    sandbox = await sqlite_store.create_sandbox("s", Quotas())
    conversation = await sqlite_store.create_conversation(sandbox.id, "alice")
    batch = []
    for i in range(2_000):
        batch += [_entry("user", f"question {i}", "r"), _entry("assistant", f"answer {i}", "r")]
    await sqlite_store.append_entries(sandbox.id, conversation.id, batch)
    cache = window_cache(sqlite_store)
    assert cache is not None
    first = await _both(sqlite_store, sandbox.id, conversation.id, total=8_000, tools=True, after=0)
    assert first.dropped
    opened = cache.entries_read
    await sqlite_store.append_entries(
        sandbox.id,
        conversation.id,
        [_entry("user", "question 2000", "r"), _entry("assistant", "answer 2000", "r")],
    )
    after = await assemble(
        sqlite_store,
        sandbox.id,
        conversation.id,
        system="be brief",
        budget=Budget(8_000),
        tool_messages=True,
    )
    assert cache.entries_read - opened == 2
    assert after.messages[-1].content == "answer 2000"
    assert after.included_turns == first.included_turns


async def test_the_cache_keeps_to_its_budget(sqlite_store: SqliteStore) -> None:
    """Past its byte budget the cache drops the least recently used conversations (and one
    larger than the budget is not kept), and contexts stay what the store says."""
    configure_window_cache(sqlite_store, max_bytes=40_000)
    cache = window_cache(sqlite_store)
    assert cache is not None
    sandbox = await sqlite_store.create_sandbox("s", Quotas())
    conversations = []
    for turns in (20, 20, 20, 400):
        conversation = await sqlite_store.create_conversation(sandbox.id, "alice")
        batch = []
        for i in range(turns):
            batch += [_entry("user", f"q{i} " * 20, "r"), _entry("assistant", f"a{i} " * 40, "r")]
        await sqlite_store.append_entries(sandbox.id, conversation.id, batch)
        conversations.append(conversation.id)
    for conversation_id in conversations[:3]:
        await _both(sqlite_store, sandbox.id, conversation_id, total=10**6, tools=True, after=0)
        assert cache.held_bytes <= cache.max_bytes
    assert len(cache) == 3
    await _both(sqlite_store, sandbox.id, conversations[3], total=10**6, tools=True, after=0)
    assert cache.held_bytes <= cache.max_bytes
    assert len(cache) == 0  # the big one pushed out the others, then itself


async def test_cache_off_reads_the_store(sqlite_store: SqliteStore) -> None:
    """A budget of 0 turns the cache off; assembly reads the store and gives the same context."""
    configure_window_cache(sqlite_store, max_bytes=0)
    assert window_cache(sqlite_store) is None
    sandbox = await sqlite_store.create_sandbox("s", Quotas())
    history = _History(sqlite_store, sandbox.id, random.Random(7))
    while not history.conversation_id:
        await history.step()
    context = await _both(
        sqlite_store, sandbox.id, history.conversation_id, total=10**6, tools=True, after=0
    )
    assert context.included_turns >= 1


@pytest.fixture(params=["sqlite", "postgres"])
async def two_stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Store, Store]]:
    """Two store objects (two processes' worth) on one database."""
    keyring = MasterKeyring.load_or_create(tmp_path / "key")
    stores: list[Store]
    if request.param == "sqlite":
        stores = [SqliteStore(tmp_path / "db.sqlite", keyring) for _ in range(2)]
    else:
        url = request.getfixturevalue("postgres_url")
        stores = [PostgresStore(url, keyring, pool_size=2) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        yield stores[0], stores[1]
    finally:
        for store in stores:
            await store.close()


async def test_another_process_changes_are_never_served_stale(
    two_stores: tuple[Store, Store],
) -> None:
    """What another store on the same database appends, withdraws, replaces or deletes shows
    in the next cached context of this one."""
    mine, theirs = two_stores
    sandbox = await mine.create_sandbox("s", Quotas())
    history = _History(theirs, sandbox.id, random.Random(3))
    while (
        not history.conversation_id
        or (await theirs.get_conversation(sandbox.id, "alice", history.conversation_id)).entry_count
        < 10
    ):
        await history.step()
    conversation_id = history.conversation_id

    async def context() -> AssembledContext:
        return await _both(mine, sandbox.id, conversation_id, total=10**6, tools=True, after=0)

    await context()
    # Appended elsewhere: in the next context.
    await theirs.append_entries(
        sandbox.id, conversation_id, [_entry("user", "more", "r"), _entry("assistant", "ok", "r")]
    )
    assert [m.content for m in (await context()).messages[-2:]] == ["more", "ok"]
    # Withdrawn elsewhere, and its seq reused by another message: the new one, not the cached.
    run = NewRun(
        id=new_id("run"),
        sandbox_id=sandbox.id,
        end_user_id="alice",
        conversation_id=conversation_id,
        provider="fake",
        model="fake-model",
    )
    await theirs.begin_run(run, entries=[_entry("user", "first try", run.id)])
    assert (await context()).messages[-1].content == "first try"
    await theirs.finish_run(run.id, status="failed", withdraw=True)
    retry = NewRun(
        id=new_id("run"),
        sandbox_id=sandbox.id,
        end_user_id="alice",
        conversation_id=conversation_id,
        provider="fake",
        model="fake-model",
    )
    await theirs.begin_run(retry, entries=[_entry("user", "second try", retry.id)])
    assert (await context()).messages[-1].content == "second try"
    await theirs.finish_run(retry.id, status="finished")
    # Deleted elsewhere: gone here too.
    await theirs.delete_conversation(sandbox.id, "alice", conversation_id)
    for cached in (True, False):
        with pytest.raises(NotFound):
            await assemble(
                mine,
                sandbox.id,
                conversation_id,
                system="",
                budget=Budget(10**6),
                tool_messages=True,
                cached=cached,
            )
