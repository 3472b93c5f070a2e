"""``search_conversations``, a built-in tool: lets a model pull older context on demand.

Full-text search over the end user's stored conversations in this sandbox,
through the store's blind index. Returns short snippets with where they came
from, so the model can quote or ask for more; never another end user's data.
"""

from __future__ import annotations

from typing import Any

from interlockd.tools.base import Tool, ToolContext, ToolError
from interlockd.vocabulary import ToolSpec

_SNIPPET = 400
_MAX_LIMIT = 20
_OVERFETCH = 8


class SearchConversationsTool(Tool):
    spec = ToolSpec(
        name="search_conversations",
        side_effecting=False,
        description=(
            "Search this user's earlier conversations (and older parts of this one) "
            "for messages containing all the given words. Returns matching snippets, "
            "newest first, with their session id and position."
        ),
        parameters={
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "Words to search for."},
                "limit": {
                    "type": "integer",
                    "description": f"Most results to return (1-{_MAX_LIMIT}, default 5).",
                },
            },
            "required": ["query"],
        },
    )

    async def execute(self, ctx: ToolContext, arguments: dict[str, Any]) -> Any:
        query = arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ToolError("'query' must be a non-empty string")
        limit = arguments.get("limit", 5)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= _MAX_LIMIT:
            raise ToolError(f"'limit' must be an integer from 1 to {_MAX_LIMIT}")
        # The current run's own entries (the question being asked, the call
        # itself) would only echo the query back; tool-call arguments are noise.
        hits = [
            hit
            for hit in await ctx.store.search_entries(
                ctx.sandbox_id, ctx.end_user_id, query, limit=limit + _OVERFETCH
            )
            if hit.entry.run_id != ctx.run_id and hit.entry.kind != "tool_call"
        ][:limit]
        return {
            "results": [
                {
                    "session_id": hit.conversation_id,
                    "seq": hit.entry.seq,
                    "kind": hit.entry.kind,
                    "time": hit.entry.created_at.isoformat(),
                    "text": hit.entry.text[:_SNIPPET]
                    + ("…" if len(hit.entry.text) > _SNIPPET else ""),
                }
                for hit in hits
            ]
        }
