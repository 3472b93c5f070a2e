"""Kill switches: refused admission naming the switch, runs in flight ended cleanly."""

from __future__ import annotations

import grpc
import pytest

from interlock.v1 import compute_pb2 as cpb
from interlock.v1 import compute_pb2_grpc, router_pb2
from tests.conftest import RunningDaemon
from tests.fakes.openai import FakeOpenAI, Reply
from tests.streams import assert_well_formed


def stub(daemon: RunningDaemon) -> compute_pb2_grpc.ComputeStub:
    return compute_pb2_grpc.ComputeStub(daemon.channel)


async def pause(daemon: RunningDaemon, **fields: object) -> cpb.SetPauseResponse:
    return await stub(daemon).SetPause(cpb.SetPauseRequest(**fields), metadata=daemon.operator())


async def refused(daemon: RunningDaemon, **fields: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await daemon.run("hi", **fields)
    return raised.value


@pytest.mark.parametrize(
    ("scope", "target", "covered", "spared"),
    [
        (cpb.PAUSE_SCOPE_GLOBAL, "", {}, None),
        (cpb.PAUSE_SCOPE_END_USER, "u-1", {"end_user_id": "u-1"}, {"end_user_id": "u-2"}),
        (cpb.PAUSE_SCOPE_AGENT_PROVIDER, "fake", {"provider": "fake"}, {"provider": "fake_b"}),
    ],
)
async def test_pause_refuses_new_runs_naming_the_switch(
    daemon: RunningDaemon,
    scope: int,
    target: str,
    covered: dict[str, str],
    spared: dict[str, str] | None,
) -> None:
    """A run a pause covers is FAILED_PRECONDITION naming the pause and its reason; runs
    outside it go on; clearing it admits them again."""
    sandbox = daemon.sandbox_id if scope == cpb.PAUSE_SCOPE_END_USER else ""
    await pause(daemon, scope=scope, sandbox_id=sandbox, target=target, reason="incident 42")
    error = await refused(daemon, **covered)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "incident 42" in (error.details() or "")
    assert "pause" in (error.details() or "")
    if spared is not None:
        assert (await daemon.run("hi", **spared))[-1].HasField("finish")
    cleared = await stub(daemon).ClearPause(
        cpb.ClearPauseRequest(scope=scope, sandbox_id=sandbox, target=target),
        metadata=daemon.operator(),
    )
    assert cleared.cleared
    assert (await daemon.run("hi", **covered))[-1].HasField("finish")


async def test_pause_ends_a_run_in_flight_with_an_error_event(
    daemon: RunningDaemon, fake_a: FakeOpenAI
) -> None:
    """A run streaming when its provider is paused ends with an Error event naming the pause;
    what it produced is kept and the run is recorded failed."""
    fake_a.enqueue(Reply().text("Part one").stall())
    call = daemon.router.Run(
        router_pb2.RunRequest(message="long", end_user_id="u-1"), metadata=daemon.auth()
    )
    events = []
    async for event in call:
        events.append(event)
        if event.HasField("text_delta"):
            response = await pause(
                daemon, scope=cpb.PAUSE_SCOPE_AGENT_PROVIDER, target="fake", reason="cost spike"
            )
            assert response.stopped_runs == 1
    assert_well_formed(events)
    error = events[-1].error
    assert error.code == "FAILED_PRECONDITION"
    assert "cost spike" in error.message
    window = await daemon.window(events[0].run_started.session_id)
    assert [e.text for e in window] == ["long", "Part one"]
    run = await daemon.daemon.store.get_run(daemon.sandbox_id, events[0].run_id)
    assert run.status == "failed"
    await fake_a.wait_for_disconnects(1)  # the provider call was closed too


async def test_pauses_need_the_operator_and_valid_coordinates(daemon: RunningDaemon) -> None:
    """A sandbox key cannot set pauses; a scope without its target is INVALID_ARGUMENT."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub(daemon).SetPause(
            cpb.SetPauseRequest(scope=cpb.PAUSE_SCOPE_GLOBAL), metadata=daemon.auth()
        )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for request, field in [
        (cpb.SetPauseRequest(), "scope"),
        (cpb.SetPauseRequest(scope=cpb.PAUSE_SCOPE_END_USER, target="u-1"), "sandbox_id"),
        (cpb.SetPauseRequest(scope=cpb.PAUSE_SCOPE_AGENT_PROVIDER), "target"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub(daemon).SetPause(request, metadata=daemon.operator())
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (raised.value.details() or "")
    listed = await stub(daemon).ListPauses(cpb.ListPausesRequest(), metadata=daemon.operator())
    assert list(listed.pauses) == []
