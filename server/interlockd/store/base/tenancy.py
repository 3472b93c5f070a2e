"""Tenancy: sandboxes and their quotas, keys (operator, API, data) and secrets.

A sandbox is the tenant: everything else in the store belongs to one and goes
with it. Only hashes of operator and API keys are stored; secrets are sealed.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

    from interlockd.store.base.paging import Page


#: A sandbox secret's name: 1-64 characters of ``[a-z0-9_.-]``.
SECRET_NAME = re.compile(r"[a-z0-9_.-]{1,64}")


def check_secret_name(name: str) -> str:
    """Return ``name`` if it is a valid secret name (:data:`SECRET_NAME`), else raise ValueError."""
    if not SECRET_NAME.fullmatch(name):
        raise ValueError(f"secret name must be 1-64 characters of [a-z0-9_.-], got {name!r}")
    return name


@dataclass(frozen=True, slots=True)
class Quotas:
    """Per-sandbox limits, read and enforced by :meth:`Store.begin_run`. Zero means unlimited."""

    max_concurrent_runs: int = 0
    max_concurrent_runs_per_end_user: int = 0
    max_tokens_per_day: int = 0
    #: Spend budgets in USD (see ``store/base/budgets.py``): the sandbox's, and
    #: one that applies to each of its end users.
    usd_per_day: float = 0.0
    usd_per_month: float = 0.0
    end_user_usd_per_day: float = 0.0
    end_user_usd_per_month: float = 0.0


@dataclass(frozen=True, slots=True)
class Sandbox:
    id: str
    name: str
    created_at: datetime
    quotas: Quotas


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A sandbox API key. Only its hash is stored; ``prefix`` is shown to humans."""

    id: str
    sandbox_id: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RotationReport:
    master_key_id: str
    data_keys_rewrapped: int
    sandboxes_with_new_data_key: int


class TenancyStore(abc.ABC):
    """Sandboxes, their quotas, keys and secrets."""

    @abc.abstractmethod
    async def add_operator_key(self, key_hash: str) -> None:
        """Register an operator key by its hash (sandbox administration)."""

    @abc.abstractmethod
    async def has_operator_key(self) -> bool:
        """Whether any operator key exists (false on a fresh store)."""

    @abc.abstractmethod
    async def is_operator_key(self, key_hash: str) -> bool:
        """Whether ``key_hash`` is a registered operator key."""

    @abc.abstractmethod
    async def create_sandbox(self, name: str, quotas: Quotas) -> Sandbox:
        """Create a sandbox with a fresh data key wrapped by the current master key.

        Raise AlreadyExists if a live sandbox already has ``name``.
        """

    @abc.abstractmethod
    async def get_sandbox(self, sandbox_id: str) -> Sandbox:
        """Return the sandbox or raise NotFound."""

    @abc.abstractmethod
    async def list_sandboxes(self, page_size: int, page_token: str) -> Page[Sandbox]:
        """Sandboxes in creation order, paged by an opaque token."""

    @abc.abstractmethod
    async def set_quotas(self, sandbox_id: str, quotas: Quotas) -> Sandbox:
        """Replace the sandbox's quotas (every later :meth:`Store.begin_run` admits by
        them; running runs are left alone); raise NotFound."""

    @abc.abstractmethod
    async def delete_sandbox(self, sandbox_id: str) -> None:
        """Delete the sandbox and everything in it, its data keys included
        (so any copy of its sealed values left elsewhere can never be opened).
        Raise NotFound."""

    @abc.abstractmethod
    async def create_api_key(
        self, sandbox_id: str, name: str, key_hash: str, prefix: str
    ) -> ApiKey:
        """Store a new key's hash for the sandbox; raise NotFound for the sandbox."""

    @abc.abstractmethod
    async def list_api_keys(self, sandbox_id: str) -> list[ApiKey]:
        """All keys of the sandbox, revoked ones included, in creation order."""

    @abc.abstractmethod
    async def revoke_api_key(self, sandbox_id: str, key_id: str) -> ApiKey:
        """Mark the key revoked (idempotent); NotFound if it is not this sandbox's."""

    @abc.abstractmethod
    async def find_api_key(self, key_hash: str) -> ApiKey | None:
        """The live (not revoked) key with this hash, or None."""

    @abc.abstractmethod
    async def set_secret(self, sandbox_id: str, name: str, value: str) -> None:
        """Store (insert or replace) the sandbox's secret ``name`` (e.g. its own provider
        API key).

        The value is sealed with the sandbox's current data key, bound to
        (sandbox, name), so a copy in another sandbox's or name's row fails to
        open; it stays readable after :meth:`rotate_keys`. Raise ValueError
        for an invalid name (see :func:`check_secret_name`), NotFound for an
        unknown sandbox. Secrets are deleted with the sandbox.
        """

    @abc.abstractmethod
    async def get_secret(self, sandbox_id: str, name: str) -> str | None:
        """The secret's value, or None if the sandbox has no such secret (or does not
        exist). ValueError for an invalid name."""

    @abc.abstractmethod
    async def delete_secret(self, sandbox_id: str, name: str) -> None:
        """Delete the secret. Idempotent: an absent secret (or sandbox) is not an error.
        ValueError for an invalid name."""

    @abc.abstractmethod
    async def list_secret_names(self, sandbox_id: str) -> list[str]:
        """Names of the sandbox's secrets, sorted; never their values. [] for an
        unknown sandbox."""

    @abc.abstractmethod
    async def rotate_keys(self, *, new_data_keys: bool = True) -> RotationReport:
        """Rewrap every data key with the current master key and, if asked,
        give every sandbox a new data key for new writes. Old rows stay
        readable: each sealed value records the id of the key that sealed it."""
