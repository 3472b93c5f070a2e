"""Stream one turn, then continue the conversation, with the blocking client.

    INTERLOCK_API_KEY=ilk_... python quickstart.py

INTERLOCK_ADDRESS (default 127.0.0.1:7600) says where the daemon listens; the
turn runs on the daemon's default provider and model.
"""

import sys

from interlock import InterlockError, SyncClient


def main() -> int:
    try:
        with SyncClient() as client:  # INTERLOCK_ADDRESS, INTERLOCK_API_KEY
            session_id = ""
            with client.run(
                "Where is my order?", end_user_id="u-123", system="You are a support agent."
            ) as stream:
                for event in stream:
                    kind = event.WhichOneof("event")
                    if kind == "run_started":
                        session_id = event.run_started.session_id
                    elif kind == "text_delta":
                        print(event.text_delta.text, end="", flush=True)
                    elif kind == "tool_call":
                        call = event.tool_call
                        print(f"→ {call.name}({call.arguments_json})", file=sys.stderr)
                    elif kind == "finish":
                        print()
                    elif kind == "error":
                        print(f"error: {event.error.code}: {event.error.message}", file=sys.stderr)
                        return 1

            # The same conversation: session_id from the first turn's run_started event.
            outcome = client.run_text("Thanks!", end_user_id="u-123", session_id=session_id)
            outcome.raise_for_error()  # RunFailed if it ended with an error event
            print(outcome.text)
    except InterlockError as exc:  # Unauthenticated, Unavailable, DeadlineExceeded, ...
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
