"""Conversations: an end user's sessions, their window of entries and its search index.

Entry text and titles are sealed at rest; the search index holds keyed hashes
of words, never the words.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from interlockd.store.base.paging import Page


EntryKind = Literal["user", "assistant", "tool_call", "tool_result", "summary"]


@dataclass(frozen=True, slots=True)
class Conversation:
    """One end user's session in a sandbox; its window lives in entries."""

    id: str
    sandbox_id: str
    end_user_id: str
    created_at: datetime
    updated_at: datetime
    title: str = ""  # sealed at rest
    last_provider: str = ""
    last_model: str = ""
    entry_count: int = 0


@dataclass(frozen=True, slots=True)
class NewEntry:
    """A window entry to append. ``text`` is sealed at rest."""

    kind: EntryKind
    text: str
    run_id: str
    tokens: int  # estimated token count of ``text`` (context budgeting)
    provider: str = ""
    model: str = ""
    tool_call_id: str = ""
    tool_name: str = ""
    is_error: bool = False
    #: The integration a tool result came from ("" for anything else).
    source_id: str = ""


@dataclass(frozen=True, slots=True)
class WindowEntry:
    """A stored window entry, opened."""

    conversation_id: str
    seq: int  # strictly increasing within the conversation, starting at 1
    kind: EntryKind
    text: str
    run_id: str
    tokens: int
    created_at: datetime
    provider: str = ""
    model: str = ""
    tool_call_id: str = ""
    tool_name: str = ""
    is_error: bool = False
    source_id: str = ""


@dataclass(frozen=True, slots=True)
class WindowVersion:
    """What a copy of a conversation's window held outside the store is checked against.

    ``entry_count`` is the newest seq; ``revision`` changes whenever an entry is
    removed or rewritten (a withdrawn user message, whose seq the next append
    reuses); ``created_at`` tells a conversation from one that replaced it under
    the same id. Same ``created_at`` and ``revision``: the entries up to a seq
    held are still the window's, and only those after it are new.
    """

    entry_count: int
    revision: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class WindowChanges:
    """A conversation's :class:`WindowVersion` and entries after a seq, read together."""

    version: WindowVersion
    entries: list[WindowEntry]  # oldest first


@dataclass(frozen=True, slots=True)
class SearchHit:
    conversation_id: str
    entry: WindowEntry


class ConversationStore(abc.ABC):
    """Conversations, the entries of their windows, and search over them."""

    @abc.abstractmethod
    async def create_conversation(self, sandbox_id: str, end_user_id: str) -> Conversation:
        """Start a new, empty conversation with a fresh ``conv_`` id for the end user.

        Creates the end user on first sight. Raise NotFound for an unknown
        sandbox. A turn that starts a conversation uses ``begin_run(...,
        create_conversation=True)`` instead, which does the same inside its
        admission transaction.
        """

    @abc.abstractmethod
    async def get_conversation(
        self, sandbox_id: str, end_user_id: str, conversation_id: str
    ) -> Conversation:
        """Return it, or raise NotFound if it is not this end user's in this sandbox."""

    @abc.abstractmethod
    async def list_conversations(
        self, sandbox_id: str, end_user_id: str, page_size: int, page_token: str
    ) -> Page[Conversation]:
        """The end user's conversations, most recently updated first."""

    @abc.abstractmethod
    async def set_conversation_title(
        self, sandbox_id: str, end_user_id: str, conversation_id: str, title: str
    ) -> Conversation:
        """Replace the title (sealed at rest); NotFound as for :meth:`get_conversation`.

        ``updated_at`` is left alone: it tracks the window, not the metadata.
        """

    @abc.abstractmethod
    async def delete_conversation(
        self, sandbox_id: str, end_user_id: str, conversation_id: str
    ) -> None:
        """Delete the conversation, its entries, its search index rows and its provider
        sessions; NotFound otherwise."""

    @abc.abstractmethod
    async def append_entries(
        self,
        sandbox_id: str,
        conversation_id: str,
        entries: Sequence[NewEntry],
        *,
        provider: str = "",
        model: str = "",
    ) -> list[int]:
        """Append entries atomically (all or none) and return their seqs.

        Seqs continue the conversation's (``entry_count + 1``, ...), in the
        order given; concurrent appends never share or skip one. Text is
        sealed; the search index gets blind terms of user/assistant/tool text
        (not summaries). The conversation's ``updated_at`` (to now),
        ``entry_count`` and, when non-empty, ``last_provider``/``last_model``
        are updated in the same transaction. Raise NotFound if the
        conversation is not in the sandbox. Durable when this returns.
        :meth:`begin_run` and :meth:`finish_run` append the same way inside
        their own transactions.
        """

    @abc.abstractmethod
    async def read_entries(
        self,
        sandbox_id: str,
        conversation_id: str,
        *,
        before_seq: int | None = None,
        after_seq: int | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[WindowEntry]:
        """A page of up to ``limit`` entries with ``after_seq < seq < before_seq``.

        Both bounds are exclusive and optional. ``newest_first`` takes the page
        from the newest end of that range, highest seq first (walking back
        through the window); otherwise from the oldest end, lowest seq first
        (reading forward). Raise NotFound if the conversation is not in the
        sandbox. Cost is bounded by ``limit``, never by the conversation's length.
        """

    @abc.abstractmethod
    async def read_window_changes(
        self, sandbox_id: str, conversation_id: str, *, after_seq: int, limit: int
    ) -> WindowChanges:
        """The window's version and up to ``limit`` entries with ``seq > after_seq``, oldest
        first, read in one snapshot (``limit`` 0: the version alone).

        For a caller holding opened entries of the window (context assembly
        caches them per conversation): one read tells whether they are still
        the window and brings what was appended since. Raise NotFound if the
        conversation is not in the sandbox. Cost is bounded by ``limit``.
        """

    @abc.abstractmethod
    async def search_entries(
        self,
        sandbox_id: str,
        end_user_id: str,
        query: str,
        *,
        limit: int = 10,
        exclude_conversation_id: str = "",
    ) -> list[SearchHit]:
        """Full-text search over the end user's entries (all words must match), best first.

        Only this end user's conversations in this sandbox are searched. The
        index holds keyed hashes of words, never the words themselves.
        """
