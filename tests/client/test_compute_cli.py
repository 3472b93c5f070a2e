"""`interlock compute sessions|suspend|resume|destroy|providers|explain` and
``client.compute`` against a real interlockd with its default ``local`` compute provider.

No runtime backend that places sessions (Hermes) is configured yet, so the
sessions here are records put in the daemon's store, as the scheduler would
have left them; the calls on them go through the real API and scheduler.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from interlock import Client, InvalidArgument, MissingCredentials, NotFound, SyncClient
from interlock.cli import amain
from interlock.v1 import compute_pb2
from interlockd import ids
from interlockd.store.base import Placement
from tests.conftest import RunningDaemon

T0 = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)


async def cli(
    daemon: RunningDaemon,
    capsys: pytest.CaptureFixture[str],
    *argv: str,
    api_key: str | None = None,
    operator: bool = False,
) -> tuple[int, str, str]:
    """Run `interlock <argv>` in-process with the sandbox key (``api_key``, default the
    bootstrap sandbox's; "" for none) and, with ``operator``, the operator key."""
    key = daemon.api_key if api_key is None else api_key
    connection = ["--address", daemon.address]
    if key:
        connection += ["--api-key", key]
    if operator:
        connection += ["--operator-key", daemon.operator_key]
    capsys.readouterr()  # drop the daemon's log lines, which share the captured stdout
    code = await amain([*connection, *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def seed_session(
    daemon: RunningDaemon, sandbox_id: str, *, end_user_id: str = "u-1", agent: str = "helpdesk"
) -> str:
    """A suspended session of ``local`` in the store, with no process behind it; its id."""
    store = daemon.daemon.store
    session_id = ids.new_id("cs")
    await store.create_compute_session(
        session_id=session_id,
        sandbox_id=sandbox_id,
        end_user_id=end_user_id,
        agent_key=agent,
        runtime="hermes",
        provider="local",
        region="local",
        spec_fingerprint="f" * 64,
        api_key="runtime-key",
        mcp_token="mcp-token",
        tags={"user_id": end_user_id, "sandbox_id": sandbox_id, "agent_id": agent},
        now=T0,
    )
    await store.update_compute_session(
        session_id, status="suspended", add_active_seconds=42.5, last_active_at=T0
    )
    return session_id


async def test_providers_lists_local_healthy_with_its_regions(
    daemon: RunningDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    """`compute providers` shows the default `local` provider healthy, free, able to
    suspend and archive, in region `local`; --json has the same as ComputeProviderStatus."""
    code, out, err = await cli(daemon, capsys, "compute", "providers")
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split() == [
        "NAME",
        "HEALTH",
        "RUNNING",
        "COLD",
        "START",
        "RESUME",
        "$/HOUR",
        "CAN",
        "REGIONS",
    ]
    cells = row.split()
    assert cells[:3] == ["local", "healthy", "0/unlimited"]
    assert cells[-3:] == ["$0", "suspend+archive", "local"]

    code, out, err = await cli(daemon, capsys, "compute", "providers", "--json", operator=True)
    assert code == 0, err
    (provider,) = [json.loads(line) for line in out.splitlines()]
    assert provider["name"] == "local"
    assert provider["healthy"] is True
    assert provider["breaker"] == "closed"
    assert provider["regions"] == ["local"]


async def test_sessions_is_empty_at_first(
    daemon: RunningDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new daemon has no compute sessions: nothing on stdout, a note on stderr, exit 0;
    --json prints nothing at all."""
    code, out, err = await cli(daemon, capsys, "compute", "sessions")
    assert (code, out) == (0, "")
    assert err == "no compute sessions for this selection\n"
    code, out, err = await cli(
        daemon, capsys, "compute", "sessions", "--json", api_key="", operator=True
    )
    assert (code, out, err) == (0, "", "")


async def test_explain_of_an_unknown_run_is_not_found(
    daemon: RunningDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    """Explaining a run that was never placed on compute is NOT_FOUND naming the run, from
    the CLI (one error line, exit 1) and from the client."""
    code, out, err = await cli(daemon, capsys, "compute", "explain", "run_unknown")
    assert (code, out) == (1, "")
    assert err == "error: NOT_FOUND: run run_unknown has no compute placement\n"
    async with Client(daemon.address, daemon.api_key) as client:
        with pytest.raises(NotFound, match="run_unknown"):
            await client.compute.explain("run_unknown")


@pytest.mark.parametrize("action", ["suspend", "resume", "destroy"])
async def test_operating_an_unknown_session_is_not_found(
    daemon: RunningDaemon, capsys: pytest.CaptureFixture[str], action: str
) -> None:
    """Suspending, resuming or destroying a session that does not exist is NOT_FOUND naming it."""
    code, out, err = await cli(daemon, capsys, "compute", action, "cs_unknown")
    assert (code, out) == (1, "")
    assert err == "error: NOT_FOUND: compute session cs_unknown not found\n"


async def test_client_operating_an_unknown_session_is_not_found(daemon: RunningDaemon) -> None:
    """The async and blocking clients raise NotFound for an unknown session."""
    async with Client(daemon.address, daemon.api_key) as client:
        with pytest.raises(NotFound, match="cs_unknown"):
            await client.compute.suspend("cs_unknown")

    def sync_side() -> None:
        with (
            SyncClient(daemon.address, operator_key=daemon.operator_key) as client,
            pytest.raises(NotFound, match="cs_unknown"),
        ):
            client.compute.destroy("cs_unknown")

    await asyncio.to_thread(sync_side)


async def test_bad_status_is_a_usage_error(
    daemon: RunningDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown --status exits 2 with argparse's message naming the choices, sending
    nothing; the client refuses it with ValueError before any call."""
    code, out, err = await cli(daemon, capsys, "compute", "sessions", "--status", "asleep")
    assert (code, out) == (2, "")
    assert "argument --status: invalid choice: 'asleep'" in err
    async with Client(daemon.address, daemon.api_key) as client:
        with pytest.raises(ValueError, match="unknown compute session status 'asleep'"):
            await client.compute.sessions(status="asleep")


async def test_missing_keys_are_a_usage_error(
    daemon: RunningDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without either key the session commands exit 2 naming both; the client raises
    MissingCredentials before sending anything."""
    code, out, err = await cli(daemon, capsys, "compute", "providers", api_key="")
    assert (code, out) == (2, "")
    assert "INTERLOCK_API_KEY" in err
    assert "INTERLOCK_OPERATOR_KEY" in err
    async with Client(daemon.address) as client:
        with pytest.raises(MissingCredentials, match="operator key"):
            await client.compute.providers()


async def test_naming_a_sandbox_takes_the_operator_key_and_an_api_key_sees_only_its_own(
    daemon: RunningDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    """--sandbox uses the operator key when there is one (as the ledger does); an API key
    alone naming another sandbox is INVALID_ARGUMENT."""
    other_id, _ = await daemon.new_sandbox("other")
    session_id = await seed_session(daemon, other_id)
    code, out, _ = await cli(
        daemon, capsys, "compute", "sessions", "--sandbox", other_id, operator=True
    )
    assert code == 0
    assert session_id in out
    async with Client(daemon.address, daemon.api_key) as client:
        with pytest.raises(InvalidArgument, match="own sandbox"):
            await client.compute.sessions(sandbox_id=other_id)
        assert await client.compute.sessions(sandbox_id=daemon.sandbox_id) == []


async def test_sessions_are_seen_by_their_sandbox_and_the_operator_only(
    daemon: RunningDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    """A session is listed for its sandbox's key and the operator, with its columns;
    another sandbox's key neither lists it nor can suspend it (NOT_FOUND)."""
    session_id = await seed_session(daemon, daemon.sandbox_id)
    other_id, other_key = await daemon.new_sandbox("other")

    code, out, err = await cli(daemon, capsys, "compute", "sessions")
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split() == [
        "ID",
        "END",
        "USER",
        "AGENT",
        "PROVIDER",
        "STATUS",
        "REGION",
        "ACTIVE",
        "LAST",
        "ACTIVE",
    ]
    assert row.split() == [
        session_id,
        "u-1",
        "helpdesk",
        "local",
        "suspended",
        "local",
        "42.5s",
        "2027-01-15T08:00:00Z",
    ]

    code, out, _ = await cli(daemon, capsys, "compute", "sessions", api_key=other_key)
    assert (code, out) == (0, "")
    code, out, err = await cli(daemon, capsys, "compute", "suspend", session_id, api_key=other_key)
    assert code == 1
    assert err == f"error: NOT_FOUND: compute session {session_id} not found\n"

    code, out, _ = await cli(
        daemon, capsys, "compute", "sessions", "--json", api_key="", operator=True
    )
    assert [json.loads(line)["id"] for line in out.splitlines()] == [session_id]
    code, out, _ = await cli(
        daemon, capsys, "compute", "sessions", "--sandbox", other_id, api_key="", operator=True
    )
    assert (code, out) == (0, "")


async def test_filters_and_destroy(
    daemon: RunningDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    """The filters narrow the listing; destroy leaves the session destroyed, which the
    default listing then hides and --status destroyed shows."""
    mine = await seed_session(daemon, daemon.sandbox_id, end_user_id="u-1")
    theirs = await seed_session(daemon, daemon.sandbox_id, end_user_id="u-2", agent="triage")

    async def listed(*flags: str) -> list[str]:
        code, out, err = await cli(daemon, capsys, "compute", "sessions", "--json", *flags)
        assert code == 0, err
        return [json.loads(line)["id"] for line in out.splitlines()]

    assert await listed() == [mine, theirs]
    assert await listed("--user", "u-2") == [theirs]
    assert await listed("--agent", "helpdesk") == [mine]
    assert await listed("--status", "running") == []
    assert await listed("--provider", "daytona") == []

    code, out, err = await cli(daemon, capsys, "compute", "destroy", mine)
    assert (code, out) == (0, f"destroyed compute session {mine}: now destroyed\n"), err
    assert await listed() == [theirs]
    assert await listed("--status", "destroyed") == [mine]

    def sync_side() -> compute_pb2.ComputeSession:
        with SyncClient(daemon.address, daemon.api_key) as client:
            return client.compute.suspend(theirs)  # not running: left as it is

    suspended = await asyncio.to_thread(sync_side)
    assert suspended.status == compute_pb2.COMPUTE_SESSION_STATUS_SUSPENDED


async def test_explain_shows_provider_policy_reason_and_candidates(
    daemon: RunningDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    """`compute explain` prints where the run went and why, then each provider considered."""
    events = await daemon.run("hi")
    run_id = events[0].run_id
    session_id = await seed_session(daemon, daemon.sandbox_id)
    await daemon.daemon.store.record_placement(
        Placement(
            run_id=run_id,
            sandbox_id=daemon.sandbox_id,
            compute_session_id=session_id,
            provider="local",
            policy="latency-aware",
            reason="first healthy provider in order of preference",
            candidates=[
                {"provider": "local", "verdict": "chosen", "note": "resume ~5.0s, $0"},
                {"provider": "daytona", "verdict": "skipped", "note": "breaker open"},
            ],
            ready_seconds=1.4,
            created_at=T0,
        )
    )
    code, out, err = await cli(daemon, capsys, "compute", "explain", run_id)
    assert code == 0, err
    assert out.splitlines() == [
        f"run       {run_id}",
        "provider  local",
        f"session   {session_id}",
        "policy    latency-aware",
        "reason    first healthy provider in order of preference",
        "ready     1.4s",
        "placed    2027-01-15T08:00:00Z",
        "",
        "CANDIDATE  VERDICT  NOTE",
        "local      chosen   resume ~5.0s, $0",
        "daytona    skipped  breaker open",
    ]
    _, other_key = await daemon.new_sandbox("other")
    code, _, err = await cli(daemon, capsys, "compute", "explain", run_id, api_key=other_key)
    assert code == 1
    assert "NOT_FOUND" in err
    code, out, _ = await cli(
        daemon, capsys, "compute", "explain", run_id, "--json", api_key="", operator=True
    )
    explained = json.loads(out)
    assert [c["verdict"] for c in explained["candidates"]] == ["chosen", "skipped"]
