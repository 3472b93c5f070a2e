"""End to end on the real local model: no keys, no network, the default provider."""

from __future__ import annotations

import pytest

from interlock.v1 import events_pb2 as ev
from tests.conftest import DaemonFactory

pytestmark = pytest.mark.local_model


async def test_local_model_turn_has_the_right_shape(start_daemon: DaemonFactory) -> None:
    """A turn on the local model streams RunStarted, text, and a Finish with usage."""
    pytest.importorskip("xllamacpp", reason="the `local` extra is not installed")
    daemon = await start_daemon(default_provider="local")
    events = await daemon.run(
        "Say hello in one short sentence.", max_output_tokens=16, deadline=120
    )
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "run_started"
    assert events[0].run_started.provider == "local"
    assert events[0].run_started.model == "smollm2-135m"
    assert "text_delta" in kinds
    assert kinds[-1] == "finish", events[-1]
    finish = events[-1].finish
    assert finish.usage.input_tokens > 0
    assert finish.usage.output_tokens > 0
    assert finish.stop_reason in (ev.STOP_REASON_END_TURN, ev.STOP_REASON_MAX_TOKENS)
    window = await daemon.window(events[0].run_started.session_id)
    assert len(window) == 2  # the user message and the recorded answer
