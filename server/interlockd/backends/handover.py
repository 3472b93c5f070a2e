"""Handing a conversation over to a runtime that keeps its own session.

Managed runtimes (Claude Managed Agents, Vertex AI Agent Engine) hold the
conversation in a session of their own and accept only user input. When turns
ran elsewhere — on another provider, or before the runtime's session was lost —
the router gives the session what it missed as one transcript block ahead of
the new user message. The orchestrator has already cut the window to the
turns the session has not seen and to the model's budget; this module only
splits those messages and renders them.

It knows the neutral :class:`Message` and nothing of any provider's wire format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from interlockd.vocabulary import Message

_OPEN = (
    "<conversation_so_far>\n"
    "The earlier turns of this conversation, which you have not seen. "
    "Continue the conversation from them; do not repeat them.\n"
)
_CLOSE = "</conversation_so_far>"


@dataclass(frozen=True, slots=True)
class Handover:
    """A turn's input for a session: what it missed, and the new user message."""

    transcript: str  # "" when the session has seen everything before the message
    message: str


def split(messages: Sequence[Message], system: str) -> Handover:
    """Split assembled ``messages`` into the transcript of what precedes the last user
    message and that message.

    ``system`` is the caller's prompt as given (the runtime holds it): a system
    message that adds to it (a note that older turns were left out) keeps the
    addition, in the transcript.
    """
    if not messages or messages[-1].role != "user":
        raise ValueError("the assembled context must end with the user message")
    lines: list[str] = []
    for m in messages[:-1]:
        if m.role == "system":
            extra = m.content[len(system) :] if m.content.startswith(system) else m.content
            if extra.strip():
                lines.append(extra.strip())
        elif m.role == "user":
            lines.append(f"[user]: {m.content}")
        elif m.role == "assistant":
            if m.content:
                lines.append(f"[assistant]: {m.content}")
            for call in m.tool_calls:
                lines.append(f"[assistant called tool {call.name} with {call.arguments}]")
        else:
            lines.append(f"[tool {m.name or ''} returned {m.content}]")
    transcript = f"{_OPEN}{chr(10).join(lines)}\n{_CLOSE}" if lines else ""
    return Handover(transcript=transcript, message=messages[-1].content)
