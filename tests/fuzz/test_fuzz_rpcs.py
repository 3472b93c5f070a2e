"""Fuzz every RPC of a real daemon (a child process) with random and byte-mutated requests.

For each RPC (read from the descriptors, so a new one is fuzzed without a
change here) Hypothesis sends requests built by :mod:`tests.fuzz.strategies`
with the sandbox key or the operator key. A request fails the test when the
answer is INTERNAL or UNKNOWN (a Run's in-band error included), when the call
hangs past its deadline, when the daemon's log gains a traceback, an
error-level or an unstructured line, or when the process dies. Hypothesis
then shrinks the request to a small one that still does it.

CI runs a fixed, derandomized set of examples per RPC (a second or two each).
For a longer, random run::

    INTERLOCK_FUZZ_SECONDS=60 .venv/bin/pytest tests/fuzz -s   # 60 s per RPC
    INTERLOCK_FUZZ_SEED=1234 ...                               # replay a printed seed
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.protobuf import message
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from interlock.v1 import (
    agents_pb2,
    compute_pb2,
    compute_pb2_grpc,
    conversations_pb2,
    events_pb2,
    integrations_pb2,
    ledger_pb2,
    router_pb2,
    sandboxes_pb2,
)
from tests.fuzz.strategies import request_bytes
from tests.fuzz.target import ChildDaemon, FakeInThread
from tests.security.rpcs import Rpc, all_rpcs

#: Seconds of random fuzzing per RPC; 0 (the default) is CI's derandomized run.
FUZZ_SECONDS = float(os.environ.get("INTERLOCK_FUZZ_SECONDS", "0") or 0)
#: Examples per RPC in the derandomized run.
CI_EXAMPLES = int(os.environ.get("INTERLOCK_FUZZ_EXAMPLES", "60"))
_CALL_SECONDS = 20.0
_BAD = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
_RPCS = all_rpcs()
_SETTINGS = {
    "deadline": None,
    "database": None,
    "print_blob": True,
    "suppress_health_check": list(HealthCheck),
}


@dataclass
class Target:
    """The fuzzed daemon, its keys and the ids that exist in it (the pool)."""

    daemon: ChildDaemon
    channel: grpc.Channel
    keys: tuple[str, str]  # (sandbox API key, operator key)
    pool: list[str] = field(default_factory=list)
    #: Requests that work, by RPC: fuzzed with a field or two changed.
    templates: dict[str, list[message.Message]] = field(default_factory=dict)
    #: How the requests of the current RPC were answered (printed: what the fuzz reached).
    answers: Counter[str] = field(default_factory=Counter)

    def metadata(self, key: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {key}"),)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    fake = FakeInThread()
    base_url = fake.start()
    daemon = ChildDaemon(
        Path(tmp_path_factory.mktemp("fuzz")),
        {"fake": {"kind": "openai", "base_url": base_url, "default_model": "fake-model"}},
        default_provider="fake",
        shutdown_grace_seconds=1,
        shutdown_announce_seconds=0,
    )
    try:
        daemon.start()
        channel = grpc.insecure_channel(
            daemon.address, options=[("grpc.max_send_message_length", 64 << 20)]
        )
        target = Target(daemon, channel, (daemon.api_key, daemon.operator_key))
        target.pool, target.templates = _seed(target)
        assert daemon.problems() == []
        yield target
        channel.close()
    finally:
        fake.stop()
        daemon.stop()


def _seed(t: Target) -> tuple[list[str], dict[str, list[message.Message]]]:
    """Make things for fuzzed requests to find: a spare sandbox (the one sandbox RPCs
    may delete or reconfigure), a conversation, a run, an agent, an MCP server; return
    the pool of strings that name them and the templates that use them."""
    sandbox, operator = t.metadata(t.keys[0]), t.metadata(t.keys[1])
    spare = t.channel.unary_unary(
        "/interlock.v1.Sandboxes/CreateSandbox",
        request_serializer=sandboxes_pb2.CreateSandboxRequest.SerializeToString,
        response_deserializer=sandboxes_pb2.CreateSandboxResponse.FromString,
    )(sandboxes_pb2.CreateSandboxRequest(name="spare"), metadata=operator)
    spare_id = spare.sandbox.sandbox_id
    # DeleteSandbox's own victim: the spare must outlive it (SetQuotas and others come after).
    doomed = t.channel.unary_unary(
        "/interlock.v1.Sandboxes/CreateSandbox",
        request_serializer=sandboxes_pb2.CreateSandboxRequest.SerializeToString,
        response_deserializer=sandboxes_pb2.CreateSandboxResponse.FromString,
    )(sandboxes_pb2.CreateSandboxRequest(name="doomed"), metadata=operator)
    key = t.channel.unary_unary(
        "/interlock.v1.Sandboxes/CreateApiKey",
        request_serializer=sandboxes_pb2.CreateApiKeyRequest.SerializeToString,
        response_deserializer=sandboxes_pb2.CreateApiKeyResponse.FromString,
    )(sandboxes_pb2.CreateApiKeyRequest(sandbox_id=spare_id, name="spare"), metadata=operator)
    events = list(
        t.channel.unary_stream(
            "/interlock.v1.AgentRouter/Run",
            request_serializer=router_pb2.RunRequest.SerializeToString,
            response_deserializer=events_pb2.AgentEvent.FromString,
        )(
            router_pb2.RunRequest(
                end_user_id="u-1", message="hello", request_id="req-1", labels={"team": "a"}
            ),
            metadata=sandbox,
            timeout=_CALL_SECONDS,
        )
    )
    assert events[-1].HasField("finish"), events[-1]
    t.channel.unary_unary(
        "/interlock.v1.Agents/PutAgent",
        request_serializer=agents_pb2.PutAgentRequest.SerializeToString,
        response_deserializer=agents_pb2.PutAgentResponse.FromString,
    )(
        agents_pb2.PutAgentRequest(agent=agents_pb2.Agent(slug="helpdesk", provider="fake")),
        metadata=sandbox,
    )
    pool = [
        "u-1",
        "u-2",
        "fake",
        "fake-model",
        "local",
        "helpdesk",
        "github",
        "search_conversations",
        "latency-aware",
        "req-1",
        "team",
        spare_id,
        key.api_key.key_id,
        events[0].run_id,
        events[0].run_started.session_id,
    ]
    try:
        added = t.channel.unary_unary(
            "/interlock.v1.Integrations/AddMcpServer",
            request_serializer=integrations_pb2.AddMcpServerRequest.SerializeToString,
            response_deserializer=integrations_pb2.AddMcpServerResponse.FromString,
        )(
            integrations_pb2.AddMcpServerRequest(
                name="docs", url="https://mcp.example.com/mcp", end_user_id="u-1"
            ),
            metadata=sandbox,
        )
        integration_id = added.integration.integration_id
        pool.append(integration_id)
    except grpc.RpcError as exc:  # a registration-time check may refuse a name it can't resolve
        refused = exc.code()  # type: ignore[attr-defined]
        assert refused == grpc.StatusCode.INVALID_ARGUMENT, refused
        integration_id = "intg_none"
    return [*pool, doomed.sandbox.sandbox_id], _templates(
        spare_id,
        doomed.sandbox.sandbox_id,
        key.api_key.key_id,
        events[0].run_id,
        events[0].run_started.session_id,
        integration_id,
    )


def _templates(
    spare: str, doomed: str, key_id: str, run_id: str, session_id: str, integration_id: str
) -> dict[str, list[message.Message]]:
    """A request that works (or nearly) for each RPC, naming what :func:`_seed` made."""
    a, c, i, g, s = agents_pb2, compute_pb2, integrations_pb2, ledger_pb2, sandboxes_pb2
    r, v = router_pb2, conversations_pb2
    agent = a.Agent(slug="helpdesk", provider="fake", model="fake-model", system="be brief")
    filt = g.LedgerFilter(run_id=run_id, end_user_id="u-1", provider="fake")
    pause = {"scope": c.PAUSE_SCOPE_END_USER, "sandbox_id": spare, "target": "u-1"}
    return {
        "interlock.v1.AgentRouter.Run": [
            r.RunRequest(end_user_id="u-1", message="hello"),
            r.RunRequest(end_user_id="u-1", session_id=session_id, message="again"),
            r.RunRequest(end_user_id="u-2", message="hi", request_id="rq", labels={"k": "v"}),
            r.RunRequest(end_user_id="u-1", message="hi", agent="helpdesk"),
            r.RunRequest(end_user_id="u-1", message="hi", tools=["search_conversations"]),
        ],
        "interlock.v1.Agents.PutAgent": [a.PutAgentRequest(agent=agent)],
        "interlock.v1.Agents.GetAgent": [a.GetAgentRequest(slug="helpdesk")],
        "interlock.v1.Agents.DeleteAgent": [a.DeleteAgentRequest(slug="helpdesk")],
        "interlock.v1.Compute.SetPause": [c.SetPauseRequest(**pause, reason="fuzz")],
        "interlock.v1.Compute.ClearPause": [c.ClearPauseRequest(**pause)],
        "interlock.v1.Compute.ListComputeSessions": [
            c.ListComputeSessionsRequest(end_user_id="u-1", provider="local")
        ],
        "interlock.v1.Compute.ExplainPlacement": [c.ExplainPlacementRequest(run_id=run_id)],
        "interlock.v1.Conversations.ListConversations": [
            v.ListConversationsRequest(end_user_id="u-1", page_size=1)
        ],
        "interlock.v1.Conversations.GetConversation": [
            v.GetConversationRequest(end_user_id="u-1", session_id=session_id, page_size=1)
        ],
        "interlock.v1.Integrations.Connect": [i.ConnectRequest(app="github", end_user_id="u-1")],
        "interlock.v1.Integrations.AddMcpServer": [
            i.AddMcpServerRequest(
                name="docs", url="https://mcp.example.com/mcp", headers={"X-Team": "a"}
            )
        ],
        "interlock.v1.Integrations.ListIntegrations": [
            i.ListIntegrationsRequest(end_user_id="u-1", include_disconnected=True)
        ],
        "interlock.v1.Integrations.Disconnect": [
            i.DisconnectRequest(integration_id=integration_id)
        ],
        "interlock.v1.Ledger.ListLedgerEntries": [
            g.ListLedgerEntriesRequest(filter=filt, page_size=2),
            g.ListLedgerEntriesRequest(sandbox_id=spare),
        ],
        "interlock.v1.Ledger.SummarizeUsage": [
            g.SummarizeUsageRequest(filter=filt, group_by=g.USAGE_GROUP_BY_DAY),
            g.SummarizeUsageRequest(sandbox_id=spare, group_by=g.USAGE_GROUP_BY_RUN),
        ],
        "interlock.v1.Sandboxes.CreateSandbox": [
            s.CreateSandboxRequest(name="more", quotas=s.Quotas(max_concurrent_runs=3))
        ],
        "interlock.v1.Sandboxes.GetSandbox": [s.GetSandboxRequest(sandbox_id=spare)],
        "interlock.v1.Sandboxes.ListSandboxes": [s.ListSandboxesRequest(page_size=1)],
        "interlock.v1.Sandboxes.SetQuotas": [
            s.SetQuotasRequest(sandbox_id=spare, quotas=s.Quotas(max_tokens_per_day=10))
        ],
        "interlock.v1.Sandboxes.CreateApiKey": [s.CreateApiKeyRequest(sandbox_id=spare)],
        "interlock.v1.Sandboxes.ListApiKeys": [s.ListApiKeysRequest(sandbox_id=spare)],
        "interlock.v1.Sandboxes.RevokeApiKey": [
            s.RevokeApiKeyRequest(sandbox_id=spare, key_id=key_id)
        ],
        "interlock.v1.Sandboxes.SetSecret": [
            s.SetSecretRequest(sandbox_id=spare, name="token", value="v")
        ],
        "interlock.v1.Sandboxes.ListSecrets": [s.ListSecretsRequest(sandbox_id=spare)],
        "interlock.v1.Sandboxes.DeleteSecret": [
            s.DeleteSecretRequest(sandbox_id=spare, name="token")
        ],
        "interlock.v1.Sandboxes.DeleteSandbox": [s.DeleteSandboxRequest(sandbox_id=doomed)],
    }


def _check(t: Target, rpc: Rpc, payload: bytes, key: str) -> None:
    """Send one request; fail on INTERNAL/UNKNOWN, a hang, a log problem or a crash."""
    metadata = t.metadata(key)
    failures: list[str] = []
    try:
        if rpc.server_streaming:
            call = t.channel.unary_stream(rpc.path, response_deserializer=rpc.response.FromString)
            for item in call(payload, metadata=metadata, timeout=_CALL_SECONDS):
                error = item.error if isinstance(item, events_pb2.AgentEvent) else None
                if error is not None and error.code in ("INTERNAL", "UNKNOWN"):
                    failures.append(f"in-band error {error.code}: {error.message}")
        else:
            t.channel.unary_unary(rpc.path, response_deserializer=rpc.response.FromString)(
                payload, metadata=metadata, timeout=_CALL_SECONDS
            )
        t.answers["OK"] += 1
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details()  # type: ignore[attr-defined]
        t.answers[code.name] += 1
        if code in _BAD:
            failures.append(f"{code.name}: {details}")
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            failures.append(f"no answer in {_CALL_SECONDS}s")
    if not t.daemon.alive():
        failures.append(f"the daemon died: {t.daemon.logs()[-3000:]}")
    # Read the log even when the answer already failed: its lines belong to this request.
    failures += [f"the daemon logged: {line[:3000]}" for line in t.daemon.problems()]
    assert not failures, f"{rpc}:\n" + "\n".join(failures)


def _reset(t: Target) -> None:
    """Undo what a fuzzed request may leave behind that would starve the next RPC's run:
    pauses (a global pause refuses every Run)."""
    compute = compute_pb2_grpc.ComputeStub(t.channel)
    operator = t.metadata(t.keys[1])
    for pause in compute.ListPauses(compute_pb2.ListPausesRequest(), metadata=operator).pauses:
        compute.ClearPause(
            compute_pb2.ClearPauseRequest(
                scope=pause.scope, sandbox_id=pause.sandbox_id, target=pause.target
            ),
            metadata=operator,
        )


@pytest.mark.parametrize("rpc", _RPCS, ids=str)
def test_fuzzed_requests_never_crash_the_daemon(target: Target, rpc: Rpc) -> None:
    """Random, mutated and garbage requests to an RPC are answered with a status that says
    what was wrong (never INTERNAL or UNKNOWN), leave no traceback or unstructured line in
    the log, and never kill the daemon."""
    requests = request_bytes(rpc.request, target.pool, target.templates.get(str(rpc), []))
    examples = st.tuples(requests, st.sampled_from(target.keys))

    def one(example: tuple[bytes, str]) -> None:
        _check(target, rpc, *example)

    try:
        if FUZZ_SECONDS <= 0:
            print(f"fuzz {rpc}: {CI_EXAMPLES} derandomized examples")
            settings(derandomize=True, max_examples=CI_EXAMPLES, **_SETTINGS)(
                given(examples)(one)
            )()
            return
        base = int(os.environ.get("INTERLOCK_FUZZ_SEED") or random.getrandbits(32))
        print(f"fuzz {rpc}: {FUZZ_SECONDS:g}s, INTERLOCK_FUZZ_SEED={base}")
        stop_at = time.monotonic() + FUZZ_SECONDS
        batch = 0
        while time.monotonic() < stop_at:
            seed(base + batch)(settings(max_examples=100, **_SETTINGS)(given(examples)(one)))()
            batch += 1
    finally:
        print(f"fuzz {rpc}: answers {dict(target.answers.most_common())}")
        target.answers.clear()
        _reset(target)


def test_every_rpc_is_fuzzed() -> None:
    """The fuzzed list is the descriptors' list: every service of interlock.v1, every method."""
    assert {str(r) for r in _RPCS} >= {
        "interlock.v1.AgentRouter.Run",
        "interlock.v1.Sandboxes.DeleteSandbox",
        "interlock.v1.Integrations.WatchConnect",
        "interlock.v1.Ledger.SummarizeUsage",
    }
    assert len({r.service for r in _RPCS}) >= 7
