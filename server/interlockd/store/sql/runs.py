"""Runs: admission in one statement, a run's settlement in one transaction (leases: leases.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, NoReturn

import orjson

from interlockd.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    RunInProgress,
    StoreError,
)
from interlockd.store.base import (
    Lease,
    LedgerRow,
    NewEntry,
    NewRun,
    Run,
    RunStatus,
    RunStore,
    WindowEntry,
)
from interlockd.store.crypto import (
    SandboxKeys,
)
from interlockd.store.sql import budgets
from interlockd.store.sql.core import (
    US_PER_DAY,
)
from interlockd.store.sql.leases import SqlLeases
from interlockd.store.sql.rows import (
    blind_end_user,
    insert_sql,
    now_us,
    to_time,
    to_us,
)
from interlockd.store.sql.tables import (
    ENTRIES,
    LEDGER,
    PROVIDER_SESSIONS,
    RUNS,
)
from interlockd.store.sql.window import (
    append_to_window,
    insert_conversation,
    insert_end_user,
    insert_entries,
)
from interlockd.vocabulary import Usage

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from interlockd.store.sql.core import Tx
    from interlockd.store.sql.rows import Row


def _blind_request_id(keys: SandboxKeys, request_id: str) -> str:
    """The blind id stored for a request id ('' stays '': "no idempotency key")."""
    return keys.blind_id("request_id", request_id) if request_id else ""


#: Every admission fact of a run, the sandbox's current quotas included, and
#: the first reason to refuse it (NULL: admit). One definition serves both the
#: insert that admits (hot path: a single statement) and the read that
#: explains a refusal; inside one write transaction they see the same facts.
_ADMISSION = (
    "WITH facts AS (SELECT "
    "s.max_concurrent_runs AS max_runs, "
    "s.max_concurrent_runs_per_end_user AS max_runs_per_user, "
    "s.max_tokens_per_day AS max_tokens, "
    "(SELECT end_user_id FROM conversations WHERE id = :conv AND sandbox_id = :sbx) AS owner, "
    "(SELECT id FROM runs WHERE sandbox_id = :sbx AND request_id = :rid "
    " AND request_id <> '') AS duplicate, "
    "(SELECT id FROM runs WHERE conversation_id = :conv AND status = 'running') AS busy, "
    "(SELECT count(*) FROM runs WHERE sandbox_id = :sbx AND status = 'running') AS running, "
    "(SELECT count(*) FROM runs WHERE sandbox_id = :sbx AND end_user_id = :user "
    " AND status = 'running') AS running_for_user, "
    "coalesce((SELECT tokens FROM usage_daily WHERE sandbox_id = :sbx AND day = :day), 0) "
    " AS tokens_today, " + budgets.BUDGET_FACTS + " "
    "FROM (SELECT 1) AS one LEFT JOIN sandboxes s ON s.id = :sbx), "
    "admission AS (SELECT *, CASE "
    "WHEN max_runs IS NULL THEN 'sandbox' "
    "WHEN owner IS NULL OR owner <> :user THEN 'conversation' "
    "WHEN duplicate IS NOT NULL THEN 'request_id' "
    "WHEN busy IS NOT NULL THEN 'busy' "
    "WHEN max_runs > 0 AND running >= max_runs THEN 'max_concurrent_runs' "
    "WHEN max_runs_per_user > 0 AND running_for_user >= max_runs_per_user "
    " THEN 'max_concurrent_runs_per_end_user' "
    "WHEN max_tokens > 0 AND tokens_today >= max_tokens THEN 'max_tokens_per_day' "
    + budgets.BUDGET_REFUSALS
    + " "
    "END AS refusal FROM facts) "
)


async def _insert_admitted_run(
    db: Tx, keys: SandboxKeys, run: NewRun, now: int, lease: Lease | None
) -> None:
    """Insert ``run`` as running if admission allows it, else raise why not (nothing inserted)."""
    reserve, periods = budgets.to_micros(run.reserve_usd), budgets.Periods.at(now)
    params = {
        "id": run.id,
        "sbx": run.sandbox_id,
        "user": blind_end_user(keys, run.end_user_id),
        "conv": run.conversation_id,
        "provider": run.provider,
        "model": run.model,
        "rid": _blind_request_id(keys, run.request_id),
        "rid_sealed": (
            keys.seal(run.request_id, table="runs", row=run.id, column="request_id")
            if run.request_id
            else None
        ),
        "labels": (
            keys.seal(orjson.dumps(run.labels).decode(), table="runs", row=run.id, column="labels")
            if run.labels
            else None
        ),
        "now": now,
        "day": now // US_PER_DAY,
        **budgets.admission_params(run.agent, reserve, periods),
        "owner": lease.owner if lease else "",
        "until": to_us(lease.expires_at) if lease else None,
    }
    # RETURNING, not rowcount: the sqlite3 module reports no rowcount for a
    # statement that starts with WITH.
    inserted = list(
        await db.fetch(
            _ADMISSION + "INSERT INTO runs (id, sandbox_id, end_user_id, conversation_id, "
            "provider, model, request_id, request_id_sealed, labels_sealed, status, started_at, "
            "lease_owner, lease_expires_at, "
            "agent, reservation_micros, reserved_micros, budget_day, budget_month) "
            "SELECT :id, :sbx, :user, :conv, :provider, :model, :rid, "
            "CAST(:rid_sealed AS BLOB), CAST(:labels AS BLOB), 'running', CAST(:now AS BIGINT), "
            ":owner, CAST(:until AS BIGINT), "
            "CAST(:agent AS TEXT), reserve, reserve, day_start, CAST(:month_start AS BIGINT) "
            "FROM admission WHERE refusal IS NULL RETURNING 1",
            params,
        )
    )
    if inserted:
        user = params["user"]
        await budgets.reserve(db, run.sandbox_id, user, run.agent, reserve, periods)
        return
    rows = list(await db.fetch(_ADMISSION + "SELECT * FROM admission", params))
    _refuse(run, rows[0])


async def _withdraw_run(db: Tx, run: Run) -> Run:
    """Release ``run``'s request_id and take back its user message (see Store.finish_run)."""
    await db.execute(
        "UPDATE runs SET request_id = '', request_id_sealed = NULL WHERE id = ?", (run.id,)
    )
    mine = list(
        await db.fetch("SELECT id, seq, kind FROM entries WHERE run_id = ? ORDER BY seq", (run.id,))
    )
    if len(mine) == 1 and mine[0]["kind"] == "user":
        conversation = list(
            await db.fetch(
                "SELECT entry_count FROM conversations WHERE id = ?", (run.conversation_id,)
            )
        )
        if conversation and conversation[0]["entry_count"] == mine[0]["seq"]:
            # The newest entry (one turn at a time): seqs stay gapless.
            await db.execute("DELETE FROM entries WHERE id = ?", (mine[0]["id"],))
            if mine[0]["seq"] == 1:
                await db.execute("DELETE FROM conversations WHERE id = ?", (run.conversation_id,))
            else:
                # The next append reuses the seq: a new revision tells a cached
                # window (context assembly) that the entry it holds is gone.
                await db.execute(
                    "UPDATE conversations SET entry_count = entry_count - 1, "
                    "revision = revision + 1 WHERE id = ?",
                    (run.conversation_id,),
                )
    return replace(run, request_id="")


def _refuse(run: NewRun, facts: Row) -> NoReturn:
    """Raise the error for the refusal ``facts`` name, with the numbers behind it."""
    match facts["refusal"]:
        case "sandbox":
            raise NotFound(f"sandbox {run.sandbox_id} not found")
        case "conversation":
            raise NotFound(f"conversation {run.conversation_id} not found")
        case "request_id":
            raise AlreadyExists(
                f"request_id {run.request_id!r} was already used in this sandbox "
                f"(run {facts['duplicate']}); use a new request_id to start another turn"
            )
        case "busy":
            raise FailedPrecondition(
                f"conversation {run.conversation_id} already has a turn in progress; "
                "wait for it to finish"
            )
        case "max_concurrent_runs":
            raise ResourceExhausted(
                f"sandbox {run.sandbox_id} has {facts['running']} runs in progress and its "
                f"max_concurrent_runs quota is {facts['max_runs']}; "
                "retry when one finishes or raise the quota"
            )
        case "max_concurrent_runs_per_end_user":
            raise ResourceExhausted(
                f"end user {run.end_user_id!r} has {facts['running_for_user']} runs in progress "
                "and the sandbox's max_concurrent_runs_per_end_user quota is "
                f"{facts['max_runs_per_user']}; retry when one finishes or raise the quota"
            )
        case "max_tokens_per_day":
            raise ResourceExhausted(
                f"sandbox {run.sandbox_id} has used {facts['tokens_today']} tokens today (UTC) "
                f"and its max_tokens_per_day quota is {facts['max_tokens']}; "
                "retry after midnight UTC or raise the quota"
            )
        case str(budget) if budget.startswith("budget:"):
            raise budgets.refusal(run.sandbox_id, run.end_user_id, run.agent, facts)
        case refusal:
            raise StoreError(f"run {run.id} was not inserted, yet admission found {refusal!r}")


def _check_entries_belong(run_id: str, entries: Sequence[NewEntry]) -> None:
    for entry in entries:
        if entry.run_id != run_id:
            raise ValueError(f"entry of run {entry.run_id!r} does not belong to run {run_id}")


def _check_ledger_belongs(run: Run, ledger: Sequence[LedgerRow]) -> None:
    for row in ledger:
        if (row.run_id, row.sandbox_id) != (run.id, run.sandbox_id):
            raise ValueError(
                f"ledger row for run {row.run_id} in sandbox {row.sandbox_id} "
                f"does not belong to run {run.id}"
            )


class SqlRuns(SqlLeases, RunStore):
    """Runs from admission to their settlement."""

    async def begin_run(
        self,
        run: NewRun,
        *,
        create_conversation: bool = False,
        entries: Sequence[NewEntry] = (),
        lease: Lease | None = None,
        admitted: Callable[[Run], Awaitable[None]] | None = None,
    ) -> Run:
        _check_entries_belong(run.id, entries)
        # Unknown sandbox: NotFound before anything is written.
        keys = await self._sandbox_keys(run.sandbox_id)
        now = now_us()
        async with self._transaction(run.sandbox_id) as db:
            if create_conversation:
                # Created already holding its entries' count (they get seqs 1..n
                # below), which spares the seq-reserving UPDATE of an append.
                await insert_conversation(
                    db,
                    keys,
                    run.sandbox_id,
                    run.end_user_id,
                    run.conversation_id,
                    now,
                    entry_count=len(entries),
                    provider=run.provider if entries else "",
                    model=run.model if entries else "",
                )
            await _insert_admitted_run(db, keys, run, now, lease)
            if entries and create_conversation:
                await insert_entries(
                    db, keys, run.sandbox_id, run.conversation_id, run.end_user_id, 1, entries, now
                )
            elif entries:
                # Admission has just found the conversation, in this transaction.
                await append_to_window(
                    db,
                    keys,
                    run.sandbox_id,
                    run.conversation_id,
                    entries,
                    run.provider,
                    run.model,
                    now,
                )
            begun = Run(
                id=run.id,
                sandbox_id=run.sandbox_id,
                end_user_id=run.end_user_id,
                conversation_id=run.conversation_id,
                provider=run.provider,
                model=run.model,
                request_id=run.request_id,
                labels=dict(run.labels),
                status="running",
                started_at=to_time(now),
            )
            if admitted is not None:
                await admitted(begun)
        return begun

    async def finish_run(
        self,
        run_id: str,
        *,
        status: RunStatus,
        stop_reason: str = "",
        error_code: str = "",
        error_message: str = "",
        usage: Usage | None = None,
        cost_usd: float = 0.0,
        ledger: Sequence[LedgerRow] = (),
        entries: Sequence[NewEntry] = (),
        withdraw: bool = False,
        provider_session: str | None = None,
    ) -> Run:
        if status == "running":
            raise ValueError("finish_run needs a final status, not 'running'")
        _check_entries_belong(run_id, entries)
        usage = usage or Usage()
        now = now_us()
        async with self._transaction() as db:
            row = await _mark_finished(
                db,
                run_id,
                status=status,
                now=now,
                stop_reason=stop_reason,
                error_code=error_code,
                error_message=error_message,
                usage=usage,
                cost_usd=cost_usd,
            )
            # A running row is this call's alone (the UPDATE holds it). What
            # follows is row-level (appends reserve seqs on the conversation's
            # row, counts and budgets are additive updates), except taking the
            # run back, which checks the newest entry before deleting it: that
            # goes in turn with the sandbox's other check-then-write calls.
            # Nothing takes the sandbox first and then a running run's row, so
            # the order cannot deadlock.
            if withdraw:
                await db.lock_sandbox(row["sandbox_id"])
            keys = await self._sandbox_keys(row["sandbox_id"], tx=db)
            finished = RUNS.load(row, keys)
            if withdraw:
                finished = await _withdraw_run(db, finished)
            _check_ledger_belongs(finished, ledger)
            if entries:
                # None: the conversation was deleted during the run. Its entries
                # have nowhere to go, but the run must still close.
                await append_to_window(
                    db,
                    keys,
                    finished.sandbox_id,
                    finished.conversation_id,
                    entries,
                    finished.provider,
                    finished.model,
                    now,
                )
            if ledger:
                await _insert_ledger(db, keys, finished, ledger, now)
            if provider_session is not None:
                await _settle_provider_session(db, keys, finished, provider_session, now)
            await _count_daily_tokens(db, finished.sandbox_id, usage, now)
            await budgets.settle(
                db, run_id, cost_usd + sum(r.cost_usd for r in ledger if r.kind == "compute")
            )
        return finished

    async def resume_run(self, sandbox_id: str, run_id: str, *, lease: Lease | None = None) -> Run:
        async with self._transaction(sandbox_id) as db:
            found = list(
                await db.fetch(
                    f"SELECT {RUNS.columns}, agent, reservation_micros FROM runs "
                    "WHERE id = ? AND sandbox_id = ?",
                    (run_id, sandbox_id),
                )
            )
            if not found:
                raise NotFound(f"run {run_id} not found")
            # Each attempt reserves the run's worst case again, in today's periods.
            agent, reserve = found[0]["agent"], found[0]["reservation_micros"]
            keys = await self._sandbox_keys(sandbox_id, tx=db)
            run = RUNS.load(found[0], keys)
            if run.status == "running":
                raise RunInProgress(
                    f"run {run_id} is in progress; retry when it has ended to get its replay"
                )
            if run.status not in ("interrupted", "cancelled"):
                raise FailedPrecondition(
                    f"run {run_id} ended {run.status}; only an interrupted or cancelled run resumes"
                )
            now = now_us()
            params = {
                "id": run.id,
                "sbx": run.sandbox_id,
                "user": blind_end_user(keys, run.end_user_id),
                "conv": run.conversation_id,
                "rid": "",  # the run holds its own request_id: not a duplicate
                "day": now // US_PER_DAY,
                **budgets.admission_params(agent, reserve, budgets.Periods.at(now)),
                "owner": lease.owner if lease else "",
                "until": to_us(lease.expires_at) if lease else None,
            }
            rows = list(
                await db.fetch(
                    _ADMISSION + "UPDATE runs SET status = 'running', finished_at = NULL, "
                    "stop_reason = '', error_code = '', error_message = '', "
                    "lease_owner = :owner, lease_expires_at = CAST(:until AS BIGINT), "
                    "reserved_micros = reservation_micros, "
                    "budget_day = CAST(:day_start AS BIGINT), "
                    "budget_month = CAST(:month_start AS BIGINT) "
                    "WHERE id = :id AND (SELECT refusal FROM admission) IS NULL "
                    f"RETURNING {RUNS.columns}",
                    params,
                )
            )
            if not rows:
                facts = list(await db.fetch(_ADMISSION + "SELECT * FROM admission", params))
            else:
                await budgets.reserve(
                    db, sandbox_id, params["user"], agent, reserve, budgets.Periods.at(now)
                )
        if not rows:
            _refuse(
                NewRun(
                    id=run.id,
                    sandbox_id=run.sandbox_id,
                    end_user_id=run.end_user_id,
                    conversation_id=run.conversation_id,
                    provider=run.provider,
                    model=run.model,
                    request_id=run.request_id,
                    agent=agent,
                ),
                facts[0],
            )
        return RUNS.load(rows[0], keys)

    async def get_run(self, sandbox_id: str, run_id: str) -> Run:
        rows = await self._fetch(
            f"SELECT {RUNS.columns} FROM runs WHERE id = ? AND sandbox_id = ?",
            (run_id, sandbox_id),
        )
        if not rows:
            raise NotFound(f"run {run_id} not found")
        return await self._opened(sandbox_id, lambda keys: RUNS.load(rows[0], keys))

    async def find_run_by_request_id(self, sandbox_id: str, request_id: str) -> Run | None:
        if not request_id:
            return None
        try:
            keys = await self._sandbox_keys(sandbox_id)
        except NotFound:
            return None
        rows = await self._fetch(
            f"SELECT {RUNS.columns} FROM runs "
            "WHERE sandbox_id = ? AND request_id = ? AND request_id <> ''",
            (sandbox_id, _blind_request_id(keys, request_id)),
        )
        if not rows:
            return None
        return await self._opened(sandbox_id, lambda keys: RUNS.load(rows[0], keys))

    async def read_run_entries(self, sandbox_id: str, run_id: str) -> list[WindowEntry]:
        rows = await self._fetch(
            f"SELECT {ENTRIES.columns} FROM entries WHERE run_id = ? AND sandbox_id = ? "
            "ORDER BY seq",
            (run_id, sandbox_id),
        )
        if not rows:
            return []
        return await self._opened(sandbox_id, lambda keys: [ENTRIES.load(r, keys) for r in rows])


async def _insert_ledger(
    db: Tx, keys: SandboxKeys, run: Run, ledger: Sequence[LedgerRow], now: int
) -> None:
    """Write the run's ledger rows (checked to be its own)."""
    # A row is the run's end user's (whose end_users row exists); one naming
    # another end user gets that user's row first.
    for end_user_id in {row.end_user_id for row in ledger} - {run.end_user_id}:
        await insert_end_user(db, keys, run.sandbox_id, end_user_id, now)
    rows = [LEDGER.dump(row, keys, created_at=now) for row in ledger]
    await db.executemany(insert_sql("ledger", rows[0]), rows)


async def _settle_provider_session(
    db: Tx, keys: SandboxKeys, run: Run, session_id: str, now: int
) -> None:
    """Forget the run's provider session ('') or record it as having seen the whole window.

    Part of :meth:`SqliteRuns.finish_run`'s transaction, after its entries: the
    newest seq is the conversation's entry count then. A conversation deleted
    during the run has no session to keep.
    """
    where = {"conv": run.conversation_id, "sbx": run.sandbox_id, "provider": run.provider}
    if not session_id:
        await db.execute(
            "DELETE FROM provider_sessions "
            "WHERE conversation_id = :conv AND sandbox_id = :sbx AND provider = :provider",
            where,
        )
        return
    sealed = PROVIDER_SESSIONS.seal(
        keys,
        {"conversation_id": run.conversation_id, "provider": run.provider},
        "session_id",
        session_id,
        json=False,
    )
    await db.execute(
        "INSERT INTO provider_sessions (conversation_id, sandbox_id, provider, "
        "session_id_sealed, through_seq, updated_at) "
        "SELECT id, sandbox_id, :provider, :sealed, entry_count, :now FROM conversations "
        "WHERE id = :conv AND sandbox_id = :sbx "
        "ON CONFLICT (conversation_id, provider) DO UPDATE SET "
        "session_id_sealed = excluded.session_id_sealed, "
        "through_seq = excluded.through_seq, updated_at = excluded.updated_at",
        {**where, "sealed": sealed, "now": now},
    )


async def _mark_finished(
    db: Tx,
    run_id: str,
    *,
    status: RunStatus,
    now: int,
    stop_reason: str,
    error_code: str,
    error_message: str,
    usage: Usage,
    cost_usd: float,
) -> Row:
    """End a running run, adding its usage and cost to its totals; the updated row.

    Raises NotFound for an unknown run and FailedPrecondition for one already ended.
    """
    rows = list(
        await db.fetch(
            # Totals add up: a resumed run closes once per attempt.
            "UPDATE runs SET status = ?, finished_at = ?, stop_reason = ?, "
            "error_code = ?, error_message = ?, input_tokens = input_tokens + ?, "
            "output_tokens = output_tokens + ?, "
            "cache_read_tokens = cache_read_tokens + ?, "
            "cache_write_tokens = cache_write_tokens + ?, "
            "reasoning_tokens = reasoning_tokens + ?, cost_usd = cost_usd + ? "
            f"WHERE id = ? AND status = 'running' RETURNING {RUNS.columns}",
            (
                status,
                now,
                stop_reason,
                error_code,
                error_message,
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_tokens,
                usage.cache_write_tokens,
                usage.reasoning_tokens,
                cost_usd,
                run_id,
            ),
        )
    )
    if rows:
        return rows[0]
    previous = list(await db.fetch("SELECT status FROM runs WHERE id = ?", (run_id,)))
    if not previous:
        raise NotFound(f"run {run_id} not found")
    raise FailedPrecondition(
        f"run {run_id} already ended ({previous[0]['status']}); a run is finished exactly once"
    )


async def _count_daily_tokens(db: Tx, sandbox_id: str, usage: Usage, now: int) -> None:
    """Add the run's tokens to its sandbox's count for the day (the daily quota's)."""
    tokens = usage.input_tokens + usage.output_tokens
    if tokens:
        await db.execute(
            "INSERT INTO usage_daily (sandbox_id, day, tokens) VALUES (?, ?, ?) "
            "ON CONFLICT (sandbox_id, day) "
            "DO UPDATE SET tokens = usage_daily.tokens + excluded.tokens",
            (sandbox_id, now // US_PER_DAY, tokens),
        )
