"""Provider state: a managed runtime's session per conversation, and resources created at
a provider for a sandbox (agents, environments), with the lock that creates them once.

Provider names, kinds, fingerprints and ids are opaque strings here.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager
    from datetime import datetime


@dataclass(frozen=True, slots=True)
class ProviderSession:
    """A managed runtime's own session for a conversation (e.g. ``sesn_...``).

    ``through_seq`` is the seq of the last window entry that session has seen
    (0: none); entries after it ran elsewhere and must be handed over before
    the session is reused. ``session_id`` is sealed at rest.
    """

    provider: str
    session_id: str
    through_seq: int
    updated_at: datetime


class ProviderStateStore(abc.ABC):
    """Provider sessions of conversations and provider resources of sandboxes."""

    @abc.abstractmethod
    async def get_provider_session(
        self, sandbox_id: str, conversation_id: str, provider: str
    ) -> ProviderSession | None:
        """The provider's session for the conversation, or None.

        None also when the conversation is not in this sandbox (or does not
        exist): never another sandbox's session, and nothing is revealed.
        """

    @abc.abstractmethod
    async def set_provider_session(
        self,
        sandbox_id: str,
        conversation_id: str,
        provider: str,
        session_id: str,
        through_seq: int,
    ) -> ProviderSession:
        """Record (insert or replace) the provider's session for the conversation; return it.

        One session per (conversation, provider); ``updated_at`` becomes now.
        ``session_id`` is sealed with the sandbox's current data key, bound to
        (sandbox, conversation, provider), since it leads to conversation
        content at the provider. Raise NotFound if the conversation is not in
        this sandbox, ValueError for a negative ``through_seq``. Sessions are
        deleted with their conversation (and so with the sandbox).
        """

    @abc.abstractmethod
    async def clear_provider_session(
        self, sandbox_id: str, conversation_id: str, provider: str
    ) -> None:
        """Forget the provider's session for the conversation (e.g. the provider
        answered 404 for it). Idempotent: nothing to clear is not an error."""

    @abc.abstractmethod
    async def get_provider_resource(
        self, sandbox_id: str, provider: str, kind: str, fingerprint: str
    ) -> str | None:
        """The id of the resource (an agent, an environment, ...) created at
        ``provider`` for the sandbox under ``(kind, fingerprint)``, or None."""

    @abc.abstractmethod
    async def put_provider_resource(
        self, sandbox_id: str, provider: str, kind: str, fingerprint: str, resource_id: str
    ) -> str:
        """Record ``resource_id`` under the key unless one is recorded already; return the
        stored id.

        If a row exists (another coroutine or replica won the race), it is
        kept and *its* id is returned: the caller uses that one (and may
        dispose of its own). Raise NotFound for an unknown sandbox. Rows are
        deleted with the sandbox.
        """

    @abc.abstractmethod
    async def delete_provider_resource(
        self, sandbox_id: str, provider: str, kind: str, fingerprint: str, resource_id: str
    ) -> None:
        """Forget the recorded resource if its id is still ``resource_id`` (the provider
        answered 404 for it). A row that another caller already replaced is kept.
        Idempotent."""

    @abc.abstractmethod
    def provider_resource_lock(
        self, sandbox_id: str, provider: str, kind: str, fingerprint: str
    ) -> AbstractAsyncContextManager[None]:
        """A lock to hold while checking the resource cache and creating the resource::

            async with store.provider_resource_lock(sandbox_id, provider, kind, fp):
                resource_id = await store.get_provider_resource(sandbox_id, provider, kind, fp)
                if resource_id is None:
                    resource_id = await store.put_provider_resource(
                        sandbox_id, provider, kind, fp, await create_at_provider()
                    )

        Mutual exclusion among all holders of the same key, across every
        process sharing the database (PostgreSQL: ``pg_advisory_xact_lock`` on
        a hash of the key, held by a transaction open for the block), so
        concurrent runs create one resource, not one each. Different keys never
        wait for each other (a hash collision may make them, rarely). Not
        reentrant: do not take the same key again inside the block. Keep the
        block to the check and the create (never a whole turn). The lock does
        not check that the sandbox exists; :meth:`put_provider_resource` does.
        """
