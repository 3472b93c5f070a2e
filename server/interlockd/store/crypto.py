"""Envelope encryption of sandbox data: the master keyring, per-sandbox keys, sealing, blind terms.

Three layers of keys::

    master keyring (file 0600, or one key from the environment)
      └── wraps, per sandbox: data keys 1, 2, ... (one current)   -> seal values
                              the index key (key id 0, never rotated) -> blind search terms,
                                                                         blind identifiers

This module owns key generation, wrapping, the sealed-value format and the
keyed hashing of search terms. It is dialect-free: a store persists the
:class:`WrappedKey` rows and sealed bytes it produces, and nothing else ever
sees a key. It never logs, formats or returns unwrapped key material (the
``repr`` of every key holder is redacted).

Sealed value format (version 1)::

    0x01 | data key id (uint32, big endian) | nonce (12 bytes) | AES-256-GCM ciphertext + tag

The associated data binds the header and ``(sandbox_id, table, column, row)``,
so a value moved to another row, column or sandbox fails to open, and the key
id lets rows sealed before a rotation keep opening. Random 96-bit nonces are
within NIST's bound for up to 2**32 seals per data key; rotating data keys
(``interlockd keys rotate``) starts a fresh one.

Wrapped key format (version 1)::

    0x01 | len(master key id) (1 byte) | master key id (ASCII) | nonce (12 bytes) | ciphertext + tag

with associated data binding ``(sandbox_id, kind, key_id, master_key_id)``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import secrets
import stat
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from interlockd.errors import DecryptionError, StoreError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SEAL_VERSION = 1
WRAP_VERSION = 1
#: Key id of a sandbox's index key; data keys are numbered from 1.
INDEX_KEY_ID = 0
#: Distinct words indexed per entry: bounds the index growth (and the HMAC
#: work on the append path) caused by one huge tool result.
MAX_TERMS_PER_ENTRY = 512
#: Hex characters kept of each term's HMAC (64 bits: collisions are negligible
#: at any realistic vocabulary, and the index stays small).
TERM_HEX_CHARS = 16
#: Hex characters kept of a blind identifier (128 bits: no collision among the
#: end users or request ids of any one sandbox).
BLIND_ID_HEX_CHARS = 32
#: Environment-given master keys get this id.
ENV_MASTER_KEY_ID = "env"

KeyKind = Literal["data", "index"]

_SEAL_HEADER = struct.Struct(">BI")
_SEAL_OVERHEAD = _SEAL_HEADER.size + NONCE_BYTES + TAG_BYTES
_MASTER_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_MASTER_SEQ = re.compile(r"mk(\d+)")
_WORD = re.compile(r"\w+")


class KeyringError(StoreError):
    """The master keyring is missing, malformed, unsafe, or lacks a needed key."""


class UnknownDataKeyError(DecryptionError):
    """A sealed value names a data key the opened key set does not hold (yet)."""


def new_key() -> bytes:
    """A fresh random 256-bit key."""
    return secrets.token_bytes(KEY_BYTES)


def _context(label: bytes, *parts: str) -> bytes:
    """Unambiguous associated data: a label, then each part length-prefixed."""
    out = bytearray(label)
    for part in parts:
        raw = part.encode()
        out += struct.pack(">H", len(raw))
        out += raw
    return bytes(out)


# ---- the master keyring --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A sandbox key as it is stored: wrapped by a master key."""

    key_id: int
    kind: KeyKind
    wrapped: bytes
    master_key_id: str
    is_current: bool = False


class MasterKeyring:
    """Master keys by id, one of them current (used for every new wrap).

    Old master keys stay in the ring so keys wrapped before a rotation keep
    unwrapping until :meth:`Store.rotate_keys` has rewrapped them.
    """

    __slots__ = ("_aeads", "_current", "_keys", "_path")

    def __init__(
        self, keys: Mapping[str, bytes], current: str, *, path: Path | None = None
    ) -> None:
        if current not in keys:
            raise KeyringError(f"the current master key {current!r} is not in the keyring")
        for key_id, key in keys.items():
            if not _MASTER_ID.fullmatch(key_id):
                raise KeyringError(f"master key id {key_id!r} must be 1-32 of A-Z a-z 0-9 _ -")
            if len(key) != KEY_BYTES:
                raise KeyringError(f"master key {key_id!r} is {len(key)} bytes; it must be 32")
        self._keys = dict(keys)
        self._current = current
        self._path = path
        self._aeads = {key_id: AESGCM(key) for key_id, key in keys.items()}

    def __repr__(self) -> str:
        return f"MasterKeyring(current={self._current!r}, ids={sorted(self._keys)!r})"

    @property
    def current_id(self) -> str:
        return self._current

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    # -- construction --

    @classmethod
    def load_or_create(cls, path: Path) -> MasterKeyring:
        """Load the keyring file, creating it (mode 0600, one key ``mk1``) if absent."""
        try:
            return cls._load(path)
        except FileNotFoundError:
            pass
        ring = cls({"mk1": new_key()}, "mk1", path=path)
        try:
            _write_private(path, ring._serialize(), replace=False)
        except FileExistsError:
            # Another process created it first: use theirs.
            return cls._load(path)
        return ring

    @classmethod
    def load(cls, path: Path) -> MasterKeyring:
        """Load the keyring file; FileNotFoundError if there is none (nothing is created)."""
        return cls._load(path)

    @classmethod
    def from_env_value(cls, value: str) -> MasterKeyring:
        """One master key given as base64 of 32 bytes (e.g. from a secret manager)."""
        try:
            key = base64.b64decode(value.strip(), validate=True)
        except binascii.Error:
            raise KeyringError(
                "the master key given by configuration is not valid base64"
            ) from None
        if len(key) != KEY_BYTES:
            raise KeyringError(
                f"the master key given by configuration is {len(key)} bytes; it must be 32 "
                "(generate one with: head -c 32 /dev/urandom | base64)"
            )
        return cls({ENV_MASTER_KEY_ID: key}, ENV_MASTER_KEY_ID)

    @classmethod
    def _load(cls, path: Path) -> MasterKeyring:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # fstat the descriptor we read from, so the check and the read are of one file.
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise KeyringError(f"master key file {path} is not a regular file")
            if st.st_mode & 0o077:
                raise KeyringError(
                    f"master key file {path} is accessible by group or others "
                    f"(mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it. "
                    f"Restrict it with: chmod 600 {path}"
                )
            raw = b""
            while chunk := os.read(fd, 65536):
                raw += chunk
        finally:
            os.close(fd)
        try:
            doc = orjson.loads(raw)
            current = doc["current"]
            keys = {
                str(key_id): base64.b64decode(encoded, validate=True)
                for key_id, encoded in doc["keys"].items()
            }
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, binascii.Error):
            raise KeyringError(
                f"master key file {path} is malformed: expected JSON "
                '{"current": "<id>", "keys": {"<id>": "<base64 of 32 bytes>"}}'
            ) from None
        if not isinstance(current, str):
            raise KeyringError(f"master key file {path}: 'current' must be a key id")
        return cls(keys, current, path=path)

    def _serialize(self) -> bytes:
        return orjson.dumps(
            {
                "current": self._current,
                "keys": {k: base64.b64encode(v).decode() for k, v in sorted(self._keys.items())},
            },
            option=orjson.OPT_INDENT_2,
        )

    def rotate(self, path: Path) -> str:
        """Add a new current master key and rewrite the key file atomically; return its id.

        Keys already wrapped stay unwrappable (old master keys are kept); run
        :meth:`Store.rotate_keys` afterwards to rewrap them under the new key.
        """
        if ENV_MASTER_KEY_ID in self._keys:
            raise KeyringError(
                "the master key comes from configuration; rotate it at its source, "
                "never by writing it to a file"
            )
        known = dict(self._keys)
        try:
            # Start from the file as it is now, so keys another process added survive.
            on_disk = MasterKeyring._load(path)._keys
        except FileNotFoundError:
            on_disk = {}
        for key_id, key in on_disk.items():
            if known.setdefault(key_id, key) != key:
                raise KeyringError(
                    f"master key {key_id!r} in {path} differs from the one in use; "
                    "refusing to rotate over it"
                )
        taken = [int(m.group(1)) for k in known if (m := _MASTER_SEQ.fullmatch(k))]
        key_id = f"mk{max(taken, default=0) + 1}"
        key = new_key()
        keys = {**known, key_id: key}
        candidate = MasterKeyring(keys, key_id, path=path)
        # Persist first: a key that only ever lived in memory would make
        # everything wrapped with it unreadable after a restart.
        _write_private(path, candidate._serialize(), replace=True)
        self._keys, self._current, self._path = keys, key_id, path
        self._aeads = candidate._aeads
        return key_id

    def _refresh(self) -> None:
        """Re-read the key file: another process (``interlockd keys rotate``) may have rotated."""
        if self._path is None:
            return
        try:
            fresh = MasterKeyring._load(self._path)
        except (OSError, KeyringError):
            return
        for key_id, key in fresh._keys.items():
            if key_id not in self._keys:
                self._keys[key_id] = key
                self._aeads[key_id] = AESGCM(key)

    # -- wrapping --

    def wrap(self, key: bytes, *, sandbox_id: str, kind: KeyKind, key_id: int) -> WrappedKey:
        """Wrap a sandbox key under the current master key."""
        master_id = self._current
        raw_id = master_id.encode()
        nonce = secrets.token_bytes(NONCE_BYTES)
        aad = _context(b"interlock/wrap/v1", sandbox_id, kind, str(key_id), master_id)
        sealed = self._aeads[master_id].encrypt(nonce, key, aad)
        blob = bytes((WRAP_VERSION, len(raw_id))) + raw_id + nonce + sealed
        return WrappedKey(key_id, kind, blob, master_id)

    def unwrap(self, wrapped: WrappedKey, *, sandbox_id: str) -> bytes:
        """The plain sandbox key; KeyringError if its master key is unknown or it was moved."""
        blob = wrapped.wrapped
        if len(blob) < 2 or blob[0] != WRAP_VERSION:
            raise KeyringError(
                f"{wrapped.kind} key {wrapped.key_id} of sandbox {sandbox_id} "
                "has an unknown wrapping format"
            )
        id_end = 2 + blob[1]
        master_id = blob[2:id_end].decode("ascii", "replace")
        aead = self._aeads.get(master_id)
        if aead is None:
            self._refresh()
            aead = self._aeads.get(master_id)
        if aead is None:
            raise KeyringError(
                f"{wrapped.kind} key {wrapped.key_id} of sandbox {sandbox_id} is wrapped by "
                f"master key {master_id!r}, which this keyring does not hold "
                f"(it holds {', '.join(sorted(self._keys))}); start with the rotated key file"
            )
        nonce = blob[id_end : id_end + NONCE_BYTES]
        aad = _context(
            b"interlock/wrap/v1", sandbox_id, wrapped.kind, str(wrapped.key_id), master_id
        )
        try:
            return aead.decrypt(nonce, blob[id_end + NONCE_BYTES :], aad)
        except InvalidTag:
            raise KeyringError(
                f"{wrapped.kind} key {wrapped.key_id} of sandbox {sandbox_id} failed to unwrap "
                f"with master key {master_id!r}: that key is not the one it was wrapped "
                "with, or the row was altered or moved from another sandbox"
            ) from None

    def prove_opens(self, stored: Iterable[tuple[str, WrappedKey]]) -> None:
        """KeyringError unless every given ``(sandbox id, wrapped key)`` unwraps.

        AES-GCM unwraps only under the exact master key that wrapped, so one
        stored key per master key id a store holds proves this keyring is the
        one the store was written with, before anything is sealed under a
        wrong key.
        """
        for sandbox_id, wrapped in stored:
            self.unwrap(wrapped, sandbox_id=sandbox_id)

    def rewrap(self, wrapped: WrappedKey, *, sandbox_id: str) -> WrappedKey:
        """The same key wrapped under the current master key."""
        key = self.unwrap(wrapped, sandbox_id=sandbox_id)
        fresh = self.wrap(key, sandbox_id=sandbox_id, kind=wrapped.kind, key_id=wrapped.key_id)
        return WrappedKey(
            fresh.key_id, fresh.kind, fresh.wrapped, fresh.master_key_id, wrapped.is_current
        )


def _write_private(path: Path, data: bytes, *, replace: bool) -> None:
    """Write ``data`` to ``path`` through a 0600 temporary file, never leaving a partial file.

    ``replace=False`` links the finished file into place, failing with
    FileExistsError if ``path`` exists; ``replace=True`` swaps it in atomically.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # O_EXCL with mode 0600: the file is private from its first byte (no chmod window).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        # After replace the name is gone; after link (or a failure) drop the temporary name.
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)  # make the new directory entry itself durable
    finally:
        os.close(dir_fd)


# ---- one sandbox's keys ---------------------------------------------------------


class SandboxKeys:
    """The unwrapped keys of one sandbox: seal, open, and hash search terms."""

    __slots__ = ("_aeads", "_index_key", "_places", "current_key_id", "sandbox_id")

    def __init__(
        self,
        sandbox_id: str,
        data_keys: Mapping[int, bytes],
        current_key_id: int,
        index_key: bytes,
    ) -> None:
        if current_key_id not in data_keys:
            raise KeyringError(f"sandbox {sandbox_id} has no current data key")
        self.sandbox_id = sandbox_id
        self.current_key_id = current_key_id
        self._aeads = {key_id: AESGCM(key) for key_id, key in data_keys.items()}
        self._index_key = index_key
        self._places: dict[tuple[str, str], bytes] = {}

    def __repr__(self) -> str:
        return (
            f"SandboxKeys({self.sandbox_id!r}, current={self.current_key_id}, "
            f"ids={sorted(self._aeads)!r})"
        )

    def has_data_key(self, key_id: int) -> bool:
        return key_id in self._aeads

    def _aad(self, header: bytes, table: str, row: str, column: str) -> bytes:
        # header | label, sandbox, table, column | row, each length-prefixed.
        # The middle part repeats for every value of a column: build it once.
        place = self._places.get((table, column))
        if place is None:
            place = _context(b"interlock/seal/v1", self.sandbox_id, table, column)
            self._places[table, column] = place
        return header + place + _context(b"", row)

    def seal(self, plaintext: str, *, table: str, row: str, column: str) -> bytes:
        """Seal ``plaintext`` for exactly this (sandbox, table, row, column)."""
        header = _SEAL_HEADER.pack(SEAL_VERSION, self.current_key_id)
        nonce = secrets.token_bytes(NONCE_BYTES)
        aead = self._aeads[self.current_key_id]
        return (
            header
            + nonce
            + aead.encrypt(nonce, plaintext.encode(), self._aad(header, table, row, column))
        )

    def open(self, sealed: bytes, *, table: str, row: str, column: str) -> str:
        """Open a sealed value; DecryptionError unless it was sealed for exactly this place."""

        def where() -> str:  # only on failure: this is the read hot path
            return f"{table}.{column} of {row} in sandbox {self.sandbox_id}"

        if len(sealed) < _SEAL_OVERHEAD:
            raise DecryptionError(f"{where()} is not a sealed value (too short)")
        version, key_id = _SEAL_HEADER.unpack_from(sealed)
        if version != SEAL_VERSION:
            raise DecryptionError(f"{where()} has unknown seal format version {version}")
        aead = self._aeads.get(key_id)
        if aead is None:
            raise UnknownDataKeyError(
                f"{where()} was sealed with data key {key_id}, which this sandbox does not have"
            )
        try:
            plain = aead.decrypt(
                sealed[_SEAL_HEADER.size : _SEAL_HEADER.size + NONCE_BYTES],
                sealed[_SEAL_HEADER.size + NONCE_BYTES :],
                self._aad(sealed[: _SEAL_HEADER.size], table, row, column),
            )
        except InvalidTag:
            raise DecryptionError(
                f"{where()} failed to open: it was sealed for another row or sandbox, or altered"
            ) from None
        return plain.decode()

    def end_user_index_key(self, end_user_id: str) -> bytes:
        """The index key narrowed to one end user.

        Terms are hashed per end user, so one user's posting lists never mix
        with another's: a search touches only the asking user's entries, and
        equal words of two users are unlinkable in the index.
        """
        return hmac.digest(self._index_key, b"end-user\x00" + end_user_id.encode(), "sha256")

    def blind_id(self, kind: str, value: str) -> str:
        """The keyed hash that stands in for a tenant-chosen identifier at rest.

        ``kind`` names what it identifies ("end_user", "request_id"), so equal
        strings of two kinds hash apart. Deterministic per sandbox (lookups
        and grouping match on it) and unlinkable across sandboxes; 128 bits in
        hex. The domain label keeps it apart from :meth:`end_user_index_key`.
        """
        message = b"blind-id\x00" + kind.encode() + b"\x00" + value.encode()
        return hmac.digest(self._index_key, message, "sha256").hex()[:BLIND_ID_HEX_CHARS]


def blind_terms(index_key: bytes, text: str, *, limit: int = MAX_TERMS_PER_ENTRY) -> list[str]:
    """Keyed hashes of the distinct words of ``text``, in order of first appearance.

    Words are lowercased ``\\w+`` runs of at least two characters; at most
    ``limit`` are kept. Each becomes the first 16 hex characters of
    HMAC-SHA256(index_key, word), so the index never holds a plaintext word.
    Queries are hashed the same way and match whole words only.
    """
    words: dict[str, None] = {}  # an ordered set
    for match in _WORD.finditer(text.lower()):
        word = match.group()
        if len(word) > 1 and word not in words:
            words[word] = None
            if len(words) >= limit:
                break
    return [hmac.digest(index_key, w.encode(), "sha256").hex()[:TERM_HEX_CHARS] for w in words]


# ---- creating and opening a sandbox's key set -----------------------------------


def new_sandbox_keys(ring: MasterKeyring, sandbox_id: str) -> tuple[SandboxKeys, list[WrappedKey]]:
    """A new sandbox's key set: data key 1 (current) and the index key, opened and wrapped."""
    data_key, index_key = new_key(), new_key()
    wrapped_data = ring.wrap(data_key, sandbox_id=sandbox_id, kind="data", key_id=1)
    wrapped = [
        WrappedKey(1, "data", wrapped_data.wrapped, wrapped_data.master_key_id, is_current=True),
        ring.wrap(index_key, sandbox_id=sandbox_id, kind="index", key_id=INDEX_KEY_ID),
    ]
    return SandboxKeys(sandbox_id, {1: data_key}, 1, index_key), wrapped


def new_data_key(ring: MasterKeyring, sandbox_id: str, key_id: int) -> WrappedKey:
    """A new current data key for a sandbox, wrapped."""
    fresh = ring.wrap(new_key(), sandbox_id=sandbox_id, kind="data", key_id=key_id)
    return WrappedKey(key_id, "data", fresh.wrapped, fresh.master_key_id, is_current=True)


def open_sandbox_keys(
    ring: MasterKeyring, sandbox_id: str, rows: Iterable[WrappedKey]
) -> SandboxKeys:
    """Unwrap a sandbox's stored key rows into a usable key set."""
    data: dict[int, bytes] = {}
    current: int | None = None
    index_key: bytes | None = None
    for row in rows:
        key = ring.unwrap(row, sandbox_id=sandbox_id)
        if row.kind == "index":
            index_key = key
        else:
            data[row.key_id] = key
            if row.is_current:
                current = row.key_id
    if current is None or index_key is None:
        raise KeyringError(f"sandbox {sandbox_id} is missing its current data key or index key")
    return SandboxKeys(sandbox_id, data, current, index_key)


class KeyCache:
    """Opened key sets of recently used sandboxes, least recently used evicted first.

    Keeps sealing and opening off the database on the hot path. Bounded so a
    daemon serving many sandboxes holds only the working set in memory.
    """

    __slots__ = ("_capacity", "_items")

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._items: OrderedDict[str, SandboxKeys] = OrderedDict()

    def get(self, sandbox_id: str) -> SandboxKeys | None:
        keys = self._items.get(sandbox_id)
        if keys is not None:
            self._items.move_to_end(sandbox_id)
        return keys

    def put(self, keys: SandboxKeys) -> None:
        self._items[keys.sandbox_id] = keys
        self._items.move_to_end(keys.sandbox_id)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def evict(self, sandbox_id: str) -> None:
        self._items.pop(sandbox_id, None)

    def clear(self) -> None:
        self._items.clear()
