"""Tenancy: operator keys, sandboxes and their data keys, API keys, secrets."""

from __future__ import annotations

import dataclasses

from interlockd import ids
from interlockd.errors import (
    AlreadyExists,
    NotFound,
)
from interlockd.store.base import (
    ApiKey,
    Page,
    Quotas,
    RotationReport,
    Sandbox,
    TenancyStore,
    check_secret_name,
)
from interlockd.store.crypto import (
    new_data_key,
    new_sandbox_keys,
)
from interlockd.store.sql.core import (
    ConstraintViolation,
    SqlCore,
    check_page_size,
    make_page_token,
    read_page_token,
)
from interlockd.store.sql.rows import (
    now_us,
    to_time,
)
from interlockd.store.sql.tables import (
    API_KEYS,
    SANDBOXES,
    WRAPPED_KEYS,
)


class SqlTenancy(SqlCore, TenancyStore):
    """Sandboxes, their keys and secrets."""

    async def add_operator_key(self, key_hash: str) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO operator_keys (key_hash, created_at) VALUES (?, ?) "
                "ON CONFLICT (key_hash) DO NOTHING",
                (key_hash, now_us()),
            )

    async def has_operator_key(self) -> bool:
        return bool(await self._fetch("SELECT 1 FROM operator_keys LIMIT 1"))

    async def is_operator_key(self, key_hash: str) -> bool:
        return bool(
            await self._fetch("SELECT 1 FROM operator_keys WHERE key_hash = ?", (key_hash,))
        )

    async def create_sandbox(self, name: str, quotas: Quotas) -> Sandbox:
        sandbox_id = ids.new_id("sbx")
        now = now_us()
        keys, wrapped = new_sandbox_keys(self._ring, sandbox_id)
        async with self._transaction() as db:
            try:
                await db.execute(
                    f"INSERT INTO sandboxes ({SANDBOXES.columns}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (sandbox_id, name, now, *dataclasses.astuple(quotas)),
                )
            except ConstraintViolation as exc:
                if exc.kind == "unique":
                    raise AlreadyExists(
                        f"a sandbox named {name!r} already exists; choose another name"
                    ) from None
                raise
            await db.executemany(
                "INSERT INTO data_keys (sandbox_id, key_id, kind, wrapped_key, master_key_id, "
                "is_current, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (sandbox_id, w.key_id, w.kind, w.wrapped, w.master_key_id, w.is_current, now)
                    for w in wrapped
                ],
            )
        self._keys.put(keys)
        return Sandbox(sandbox_id, name, to_time(now), quotas)

    async def get_sandbox(self, sandbox_id: str) -> Sandbox:
        rows = await self._fetch(
            f"SELECT {SANDBOXES.columns} FROM sandboxes WHERE id = ?", (sandbox_id,)
        )
        if not rows:
            raise NotFound(f"sandbox {sandbox_id} not found")
        return SANDBOXES.load(rows[0])

    async def list_sandboxes(self, page_size: int, page_token: str) -> Page[Sandbox]:
        size = check_page_size(page_size)
        after = read_page_token(page_token, "sandboxes") if page_token else (-1, "")
        rows = await self._fetch(
            f"SELECT {SANDBOXES.columns} FROM sandboxes WHERE (created_at, id) > (?, ?) "
            "ORDER BY created_at, id LIMIT ?",
            (*after, size + 1),
        )
        items = [SANDBOXES.load(r) for r in rows[:size]]
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = make_page_token("sandboxes", last["created_at"], last["id"])
        return Page(items, token)

    async def set_quotas(self, sandbox_id: str, quotas: Quotas) -> Sandbox:
        async with self._transaction() as db:
            rows = list(
                await db.fetch(
                    "UPDATE sandboxes SET "
                    + ", ".join(f"{f.name} = ?" for f in dataclasses.fields(Quotas))
                    + f" WHERE id = ? RETURNING {SANDBOXES.columns}",
                    (*dataclasses.astuple(quotas), sandbox_id),
                )
            )
        if not rows:
            raise NotFound(f"sandbox {sandbox_id} not found")
        return SANDBOXES.load(rows[0])

    async def delete_sandbox(self, sandbox_id: str) -> None:
        async with self._transaction() as db:
            # Cascades to everything of the sandbox, its data keys included.
            changed = await db.execute_bulk("DELETE FROM sandboxes WHERE id = ?", (sandbox_id,))
            if changed == 0:
                raise NotFound(f"sandbox {sandbox_id} not found")
            # Pauses name their sandbox without a foreign key (global ones name none).
            await db.execute("DELETE FROM pauses WHERE sandbox_id = ?", (sandbox_id,))
        self._keys.evict(sandbox_id)
        await self._after_sandbox_deleted()

    async def create_api_key(
        self, sandbox_id: str, name: str, key_hash: str, prefix: str
    ) -> ApiKey:
        key_id = ids.new_id("key")
        now = now_us()
        async with self._transaction() as db:
            try:
                await db.execute(
                    f"INSERT INTO api_keys ({API_KEYS.columns}, key_hash) "
                    "VALUES (?, ?, ?, ?, ?, NULL, ?)",
                    (key_id, sandbox_id, name, prefix, now, key_hash),
                )
            except ConstraintViolation as exc:
                if exc.kind == "foreign_key":
                    raise NotFound(f"sandbox {sandbox_id} not found") from None
                if exc.kind == "unique":
                    raise AlreadyExists("an API key with this hash already exists") from None
                raise
        return ApiKey(key_id, sandbox_id, name, prefix, to_time(now))

    async def list_api_keys(self, sandbox_id: str) -> list[ApiKey]:
        rows = await self._fetch(
            f"SELECT {API_KEYS.columns} FROM api_keys WHERE sandbox_id = ? ORDER BY created_at, id",
            (sandbox_id,),
        )
        return [API_KEYS.load(r) for r in rows]

    async def revoke_api_key(self, sandbox_id: str, key_id: str) -> ApiKey:
        async with self._transaction() as db:
            rows = list(
                await db.fetch(
                    "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) "
                    f"WHERE id = ? AND sandbox_id = ? RETURNING {API_KEYS.columns}",
                    (now_us(), key_id, sandbox_id),
                )
            )
        if not rows:
            raise NotFound(f"API key {key_id} not found")
        return API_KEYS.load(rows[0])

    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        rows = await self._fetch(
            f"SELECT {API_KEYS.columns} FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
            (key_hash,),
        )
        return API_KEYS.load(rows[0]) if rows else None

    async def set_secret(self, sandbox_id: str, name: str, value: str) -> None:
        check_secret_name(name)
        keys = await self._sandbox_keys(sandbox_id)  # NotFound for an unknown sandbox
        sealed = keys.seal(value, table="sandbox_secrets", row=name, column="value")
        now = now_us()
        async with self._transaction() as db:
            try:
                await db.execute(
                    "INSERT INTO sandbox_secrets (sandbox_id, name, value_sealed, created_at, "
                    "updated_at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (sandbox_id, name) DO UPDATE SET "
                    "value_sealed = excluded.value_sealed, updated_at = excluded.updated_at",
                    (sandbox_id, name, sealed, now, now),
                )
            except ConstraintViolation as exc:
                if exc.kind == "foreign_key":  # deleted since its keys were read
                    raise NotFound(f"sandbox {sandbox_id} not found") from None
                raise

    async def get_secret(self, sandbox_id: str, name: str) -> str | None:
        check_secret_name(name)
        rows = await self._fetch(
            "SELECT value_sealed FROM sandbox_secrets WHERE sandbox_id = ? AND name = ?",
            (sandbox_id, name),
        )
        if not rows:
            return None
        sealed: bytes = rows[0]["value_sealed"]
        return await self._opened(
            sandbox_id,
            lambda keys: keys.open(sealed, table="sandbox_secrets", row=name, column="value"),
        )

    async def delete_secret(self, sandbox_id: str, name: str) -> None:
        check_secret_name(name)
        async with self._transaction() as db:
            await db.execute(
                "DELETE FROM sandbox_secrets WHERE sandbox_id = ? AND name = ?",
                (sandbox_id, name),
            )

    async def list_secret_names(self, sandbox_id: str) -> list[str]:
        rows = await self._fetch(
            "SELECT name FROM sandbox_secrets WHERE sandbox_id = ? ORDER BY name",
            (sandbox_id,),
        )
        return [r["name"] for r in rows]

    async def rotate_keys(self, *, new_data_keys: bool = True) -> RotationReport:
        # One transaction over every key row: a crash leaves either the old
        # wraps or the new ones, never a mix with a half-written current flag.
        # ``data_keys_rewrapped`` counts index keys too; keys already wrapped
        # by the current master key are left alone, so a re-run is cheap.
        master_key_id = self._ring.current_id
        now = now_us()
        async with self._transaction() as db:
            rows = list(
                await db.fetch(
                    "SELECT sandbox_id, key_id, kind, wrapped_key, master_key_id, is_current "
                    "FROM data_keys"
                )
            )
            rewrapped: list[tuple[bytes, str, str, int]] = []
            next_key_id: dict[str, int] = {}
            for r in rows:
                sandbox_id: str = r["sandbox_id"]
                next_key_id[sandbox_id] = max(next_key_id.get(sandbox_id, 1), r["key_id"] + 1)
                if r["master_key_id"] == master_key_id:
                    continue
                fresh = self._ring.rewrap(WRAPPED_KEYS.load(r), sandbox_id=sandbox_id)
                rewrapped.append((fresh.wrapped, fresh.master_key_id, sandbox_id, fresh.key_id))
            if rewrapped:
                await db.executemany(
                    "UPDATE data_keys SET wrapped_key = ?, master_key_id = ? "
                    "WHERE sandbox_id = ? AND key_id = ?",
                    rewrapped,
                )
            if new_data_keys and next_key_id:
                # Retire the current keys first: one current key per sandbox is a unique index.
                await db.executemany(
                    "UPDATE data_keys SET is_current = 0 WHERE sandbox_id = ? AND is_current = 1",
                    [(sandbox_id,) for sandbox_id in next_key_id],
                )
                fresh_keys = [
                    (sandbox_id, new_data_key(self._ring, sandbox_id, key_id))
                    for sandbox_id, key_id in next_key_id.items()
                ]
                await db.executemany(
                    "INSERT INTO data_keys (sandbox_id, key_id, kind, wrapped_key, "
                    "master_key_id, is_current, created_at) VALUES (?, ?, 'data', ?, ?, 1, ?)",
                    [
                        (sandbox_id, w.key_id, w.wrapped, w.master_key_id, now)
                        for sandbox_id, w in fresh_keys
                    ],
                )
        # Cached key sets still point at the old current keys.
        self._keys.clear()
        return RotationReport(
            master_key_id=master_key_id,
            data_keys_rewrapped=len(rewrapped),
            sandboxes_with_new_data_key=len(next_key_id) if new_data_keys else 0,
        )
