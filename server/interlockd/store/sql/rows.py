"""Rows and records: the one mapping between SQL rows and the store's dataclasses.

A :class:`Table` names a record type and, for each field not stored as-is in
a column of its own name, how it is stored (a :class:`Col`): a time in integer
microseconds, a boolean, JSON, a nested record spread over its own columns,
the end user a row names by blind id, or a value sealed with the sandbox's data
key. :meth:`Table.load` builds a record from a row and :meth:`Table.dump` the
column values of a record, so no table has a hand-written mapper pair.

Each sealed value is bound to (table, row identity, column) as ``crypto.py``
requires. A column a table declares is opened by :meth:`Table.load` and sealed
by :meth:`Table.dump` or :meth:`Table.seal`, so both ends use the table's row
identity. Values no record carries (integration credentials, a connect flow's
verifier, sandbox secrets, end users' own ids) and a run's admission insert
are sealed and opened with ``keys.seal``/``keys.open`` where they are used.
The keys and the cipher stay in ``crypto.py``.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

import orjson

from interlockd.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from interlockd.store.crypto import SandboxKeys

R = TypeVar("R")
Kind = Literal["plain", "time", "time_or_none", "bool", "json", "nested", "end_user", "sealed"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Row(Protocol):
    """A result row: columns by name or by position (sqlite3.Row, asyncpg.Record)."""

    def __getitem__(self, key: str | int, /) -> Any: ...

    def keys(self) -> Any: ...


def now_us() -> int:
    """Now, in integer microseconds since the epoch (how every time is stored)."""
    return time.time_ns() // 1000


def to_time(us: int) -> datetime:
    # Integer arithmetic: a float timestamp would lose microseconds.
    return _EPOCH + timedelta(microseconds=us)


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch, in integers (a float would lose microseconds)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def end_user_sealed(table: str) -> str:
    """A result column: the sealed id of the end user a row of ``table`` names by blind id.

    A scalar subquery rather than a join, so it also works in RETURNING.
    """
    return (
        f"(SELECT u.id_sealed FROM end_users u WHERE u.sandbox_id = {table}.sandbox_id "
        f"AND u.id = {table}.end_user_id) AS end_user_sealed"
    )


def blind_end_user(keys: SandboxKeys, end_user_id: str) -> str:
    """The blind id stored for an end user ('' stays '': "no end user")."""
    return keys.blind_id("end_user", end_user_id) if end_user_id else ""


def open_end_user(keys: SandboxKeys, *, sealed: bytes, blind: str) -> str:
    """An end user's own id, from its end_users row's sealed copy."""
    return keys.open(sealed, table="end_users", row=blind, column="id")


def end_user_of(keys: SandboxKeys, r: Row) -> str:
    """The end user id a row names by blind id, opened from its end_users row."""
    blind: str = r["end_user_id"]
    if not blind:
        return ""
    sealed: bytes | None = r["end_user_sealed"]
    if sealed is None:
        raise StoreError(
            f"end user {blind} of sandbox {keys.sandbox_id} has no end_users row; "
            "the database was changed outside interlockd"
        )
    return open_end_user(keys, sealed=sealed, blind=blind)


@dataclasses.dataclass(frozen=True, slots=True)
class Col:
    """How one field of a record is stored.

    ``column`` is the SQL column ("" = the field's name; for a sealed value
    ``<field>_sealed``). A sealed value is bound to the column name ``seal_as``
    ("" = the field's name) and stored as JSON when ``json``; fields with the
    same ``part`` owner share one sealed JSON document, each under its own
    ``part`` key. A NULL sealed column opens to ``empty`` (a fresh copy).
    """

    kind: Kind = "plain"
    column: str = ""
    seal_as: str = ""
    json: bool = False
    part: str = ""
    empty: Any = None
    record: type | None = None  # "nested": the record whose fields are columns


TIME = Col("time")
TIME_OR_NONE = Col("time_or_none")
BOOL = Col("bool")
JSON = Col("json")
END_USER = Col("end_user")


def sealed(
    column: str = "", *, seal_as: str = "", json: bool = False, part: str = "", empty: Any = None
) -> Col:
    """A field sealed with the sandbox's data key (see :class:`Col`)."""
    return Col("sealed", column, seal_as, json, part, empty)


def nested(record: type) -> Col:
    """A field holding a record whose fields are columns of the row (e.g. ``Usage``)."""
    return Col("nested", record=record)


class Table(Generic[R]):
    """The mapping of one record type to rows of ``name`` (see the module docstring).

    ``row`` gives the identity sealed values of a row are bound to, from the
    row (on load) or from the dumped column values (on dump).
    """

    def __init__(
        self,
        name: str,
        record: type[R],
        *,
        row: Callable[[Any], str] = lambda r: str(r["id"]),
        **cols: Col,
    ) -> None:
        self.name = name
        self.record = record
        self.row = row
        fields = [f.name for f in dataclasses.fields(record)]  # type: ignore[arg-type]
        unknown = set(cols) - set(fields)
        if unknown:
            raise TypeError(f"{record.__name__} has no fields {sorted(unknown)}")
        self.cols = {name: cols.get(name, Col()) for name in fields}
        #: The result columns a load of a whole record needs.
        self.columns = self.select()

    def column(self, field: str) -> str:
        """The SQL column of a field that is not nested."""
        col = self.cols[field]
        if col.column:
            return col.column
        if col.kind == "sealed":
            return f"{field}_sealed"
        if col.kind == "end_user":
            return "end_user_id"
        return field

    def select(self, *, given: tuple[str, ...] = ()) -> str:
        """The result columns a load needs (fields in ``given`` are passed to it instead)."""
        out: list[str] = []
        for field, col in self.cols.items():
            if field in given:
                continue
            if col.kind == "nested":
                assert col.record is not None
                out += [f.name for f in dataclasses.fields(col.record)]
            elif col.kind == "end_user":
                out += ["end_user_id", end_user_sealed(self.name)]
            else:
                out.append(self.column(field))
        return ", ".join(dict.fromkeys(out))

    def load(self, r: Row, keys: SandboxKeys | None = None, **given: Any) -> R:
        """The record of row ``r``, its sealed values opened with ``keys``, plus ``given``."""
        values: dict[str, Any] = {}
        documents: dict[str, Any] = {}
        for field, col in self.cols.items():
            if field in given:
                values[field] = given[field]
                continue
            match col.kind:
                case "nested":
                    assert col.record is not None
                    values[field] = col.record(
                        **{f.name: r[f.name] for f in dataclasses.fields(col.record)}
                    )
                case "time":
                    values[field] = to_time(r[self.column(field)])
                case "time_or_none":
                    raw = r[self.column(field)]
                    values[field] = None if raw is None else to_time(raw)
                case "bool":
                    values[field] = bool(r[self.column(field)])
                case "json":
                    values[field] = orjson.loads(r[self.column(field)])
                case "end_user":
                    values[field] = end_user_of(_need(keys, self.name), r)
                case "sealed":
                    values[field] = self._open(r, keys, field, col, documents)
                case _:
                    values[field] = r[self.column(field)]
        return self.record(**values)

    def _open(
        self,
        r: Row,
        keys: SandboxKeys | None,
        field: str,
        col: Col,
        documents: dict[str, Any],
    ) -> Any:
        column = self.column(field)
        raw: bytes | None = r[column]
        if raw is None:
            return _fresh(col.empty)
        if col.part:
            if column not in documents:
                documents[column] = orjson.loads(self._open_text(r, keys, field, col, raw))
            return documents[column][col.part]
        text = self._open_text(r, keys, field, col, raw)
        return orjson.loads(text) if col.json else text

    def _open_text(
        self,
        r: Row,
        keys: SandboxKeys | None,
        field: str,
        col: Col,
        raw: bytes,
    ) -> str:
        return _need(keys, self.name).open(
            raw, table=self.name, row=self.row(r), column=col.seal_as or field
        )

    def dump(self, record: R, keys: SandboxKeys | None = None, **extra: Any) -> dict[str, Any]:
        """The column values storing ``record`` (with ``extra`` columns), sealed with ``keys``."""
        values: dict[str, Any] = dict(extra)
        sealed_fields: list[tuple[str, Col, Any]] = []
        for field, col in self.cols.items():
            value = getattr(record, field)
            match col.kind:
                case "nested":
                    values.update(dataclasses.asdict(value))
                case "time":
                    values[self.column(field)] = to_us(value)
                case "time_or_none":
                    values[self.column(field)] = None if value is None else to_us(value)
                case "bool":
                    values[self.column(field)] = int(value)
                case "json":
                    values[self.column(field)] = orjson.dumps(value).decode()
                case "end_user":
                    values["end_user_id"] = blind_end_user(_need(keys, self.name), value)
                case "sealed":
                    sealed_fields.append((field, col, value))
                case _:
                    values[self.column(field)] = value
        # column -> (the name it is bound to, the value, whether JSON)
        to_seal: dict[str, tuple[str, Any, bool]] = {}
        for field, col, value in sealed_fields:
            column = self.column(field)
            if col.part:
                _, document, _ = to_seal.get(column, (col.seal_as or field, {}, True))
                to_seal[column] = (col.seal_as or field, {**document, col.part: value}, True)
            elif col.empty is not None and value == col.empty:
                values[column] = None
            else:
                to_seal[column] = (col.seal_as or field, value, col.json)
        for column, (seal_as, value, as_json) in to_seal.items():
            values[column] = self.seal(_need(keys, self.name), values, seal_as, value, json=as_json)
        return values

    def seal(
        self, keys: SandboxKeys, row: Mapping[str, Any], column: str, value: Any, *, json: bool
    ) -> bytes:
        """``value`` (JSON-encoded when ``json``) sealed for ``column`` of the row ``row`` names."""
        text = orjson.dumps(value).decode() if json else value
        return keys.seal(text, table=self.name, row=self.row(row), column=column)


def _need(keys: SandboxKeys | None, table: str) -> SandboxKeys:
    if keys is None:
        raise StoreError(f"a sealed value of {table} needs the sandbox's keys")
    return keys


def _fresh(empty: Any) -> Any:
    return dict(empty) if isinstance(empty, dict) else empty


def insert_sql(table: str, columns: Mapping[str, Any] | list[str], *, suffix: str = "") -> str:
    """``INSERT INTO table (columns) VALUES (:columns)``, named parameters, plus ``suffix``."""
    names = list(columns)
    return (
        f"INSERT INTO {table} ({', '.join(names)}) "
        f"VALUES ({', '.join(':' + n for n in names)}){' ' + suffix if suffix else ''}"
    )
