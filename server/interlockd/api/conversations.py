"""The Conversations servicer: an end user's sessions and their windows.

Every call is addressed by (the caller's sandbox, end_user_id, session_id);
the store answers NOT_FOUND for anything outside that, so neither another
sandbox's nor another end user's conversations can be read or probed.
"""

from __future__ import annotations

from interlock.v1 import conversations_pb2 as pb
from interlockd.api import validation as v
from interlockd.api.auth import Authenticator
from interlockd.api.handlers import Context, unary
from interlockd.api.sandboxes import timestamp
from interlockd.errors import InvalidArgument
from interlockd.store.base import Conversation, Store, WindowEntry

_KINDS = {
    "user": pb.ENTRY_KIND_USER,
    "assistant": pb.ENTRY_KIND_ASSISTANT,
    "tool_call": pb.ENTRY_KIND_TOOL_CALL,
    "tool_result": pb.ENTRY_KIND_TOOL_RESULT,
    "summary": pb.ENTRY_KIND_SUMMARY,
}


def conversation_proto(c: Conversation) -> pb.Conversation:
    return pb.Conversation(
        session_id=c.id,
        end_user_id=c.end_user_id,
        create_time=timestamp(c.created_at),
        update_time=timestamp(c.updated_at),
        last_provider=c.last_provider,
        last_model=c.last_model,
        entry_count=c.entry_count,
    )


def entry_proto(e: WindowEntry) -> pb.WindowEntry:
    return pb.WindowEntry(
        seq=e.seq,
        kind=_KINDS[e.kind],
        text=e.text,
        run_id=e.run_id,
        provider=e.provider,
        model=e.model,
        tool_call_id=e.tool_call_id,
        tool_name=e.tool_name,
        is_error=e.is_error,
        create_time=timestamp(e.created_at),
        source_id=e.source_id,
    )


class ConversationsServicer:
    def __init__(self, auth: Authenticator, store: Store) -> None:
        self._auth = auth
        self._store = store

    @unary
    async def ListConversations(
        self, request: pb.ListConversationsRequest, context: Context
    ) -> pb.ListConversationsResponse:
        principal = await self._auth.sandbox(context)
        page = await self._store.list_conversations(
            principal.sandbox_id,
            v.end_user_id(request.end_user_id),
            v.page_size(request.page_size, default=100, maximum=500),
            v.short_text(request.page_token, "page_token", 512),
        )
        return pb.ListConversationsResponse(
            conversations=[conversation_proto(c) for c in page.items],
            next_page_token=page.next_page_token,
        )

    @unary
    async def GetConversation(
        self, request: pb.GetConversationRequest, context: Context
    ) -> pb.GetConversationResponse:
        principal = await self._auth.sandbox(context)
        conversation = await self._store.get_conversation(
            principal.sandbox_id,
            v.end_user_id(request.end_user_id),
            v.identifier(request.session_id, "session_id"),
        )
        size = v.page_size(request.page_size, default=200, maximum=1000)
        after = 0
        if request.page_token:
            if not request.page_token.isdigit():
                raise InvalidArgument("page_token", "is not a token from a previous response")
            after = int(request.page_token)
        entries = await self._store.read_entries(
            principal.sandbox_id,
            conversation.id,
            after_seq=after,
            limit=size + 1,
            newest_first=False,
        )
        more = len(entries) > size
        entries = entries[:size]
        return pb.GetConversationResponse(
            conversation=conversation_proto(conversation),
            entries=[entry_proto(e) for e in entries],
            next_page_token=str(entries[-1].seq) if more else "",
        )

    @unary
    async def DeleteConversation(
        self, request: pb.DeleteConversationRequest, context: Context
    ) -> pb.DeleteConversationResponse:
        principal = await self._auth.sandbox(context)
        await self._store.delete_conversation(
            principal.sandbox_id,
            v.end_user_id(request.end_user_id),
            v.identifier(request.session_id, "session_id"),
        )
        return pb.DeleteConversationResponse()
