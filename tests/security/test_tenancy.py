"""Every RPC called across the tenancy boundary of a real daemon: never data.

For each RPC (read from the descriptors: a new RPC without probes here fails
:func:`test_every_rpc_has_probes`) the suite sends the request aimed at
sandbox A's data:

- with no key, malformed keys, a forged key and a revoked key: UNAUTHENTICATED;
- with the wrong kind of key (the operator key for a sandbox RPC, a sandbox
  key for an operator RPC): UNAUTHENTICATED or PERMISSION_DENIED;
- with sandbox B's key naming A's ids (conversations, runs, flows,
  integrations, agents, compute sessions, the sandbox itself), and with A's
  key for another end user of A: NOT_FOUND or PERMISSION_DENIED, or OK with
  nothing of A's in the answer.

Any answer an attacker gets — a response, a stream of events, an error
message — is searched for A's markers (:mod:`tests.security.world`); one the
attacker did not send is a leak. Then the owner's own request is sent
(positive control: the probe did aim at real data), and A's data is checked
intact: no attack changed or deleted anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import message

from interlock.v1 import (
    agents_pb2,
    compute_pb2,
    conversations_pb2,
    integrations_pb2,
    ledger_pb2,
    router_pb2,
    sandboxes_pb2,
)
from interlock.v1 import conversations_pb2_grpc as conversations_grpc
from interlock.v1 import integrations_pb2_grpc as integrations_grpc
from tests.security.rpcs import Rpc, all_rpcs
from tests.security.world import (
    AGENT_SLUG,
    AGENT_SYSTEM,
    ALICE_REQUEST_ID,
    ALICE_TEXT,
    World,
    metadata,
)

S = grpc.StatusCode
DENIED = {S.UNAUTHENTICATED, S.PERMISSION_DENIED}
HIDDEN = {S.NOT_FOUND, S.PERMISSION_DENIED}
_RPCS = {str(r): r for r in all_rpcs()}


@dataclass(frozen=True)
class Attack:
    """One request by one caller that must not reach A's data."""

    label: str
    key: str | None
    request: message.Message
    # Statuses the attacker may get besides OK-without-A's-data (ok=True).
    refused: frozenset[S]
    ok: bool = True


@dataclass(frozen=True)
class Probes:
    """What a caller of one RPC needs, the request aimed at A, and the attacks on it."""

    needs: str  # "sandbox", "operator" or "either": the key that may call it
    target: Callable[[World], message.Message]  # A's request, sent with A's (or the operator) key
    attacks: Callable[[World], list[Attack]]
    owner_sees: str = ""  # a marker the owner's answer holds (positive control)


def _a(
    label: str, key: str | None, request: message.Message, *refused: S, ok: bool = True
) -> Attack:
    return Attack(label, key, request, frozenset(refused or HIDDEN), ok)


def _none(_: World) -> list[Attack]:
    return []


# ---- the probes of every RPC ---------------------------------------------------------

R = router_pb2
C = conversations_pb2
G = agents_pb2
I = integrations_pb2  # noqa: E741
P = compute_pb2
L = ledger_pb2
X = sandboxes_pb2


def _run_attacks(w: World) -> list[Attack]:
    return [
        _a(
            "B continues A's session",
            w.key_b,
            R.RunRequest(end_user_id="alice", session_id=w.session_a, message="what did I say?"),
        ),
        _a(
            "B reuses A's request_id",
            w.key_b,
            R.RunRequest(end_user_id="alice", request_id=ALICE_REQUEST_ID, message="replay"),
        ),
        _a(
            "bob continues alice's session",
            w.key_a,
            R.RunRequest(end_user_id="bob", session_id=w.session_a, message="what did alice say?"),
        ),
        # One sandbox's request ids are one namespace: refused, naming no one.
        _a(
            "bob reuses alice's request_id",
            w.key_a,
            R.RunRequest(end_user_id="bob", request_id=ALICE_REQUEST_ID, message="replay"),
            S.FAILED_PRECONDITION,
        ),
        _a(
            "B runs A's saved agent",
            w.key_b,
            R.RunRequest(end_user_id="alice", agent=AGENT_SLUG, message="hi"),
        ),
        _a(
            "B searches A's conversations",
            w.key_b,
            R.RunRequest(end_user_id="alice", tools=["search_conversations"], message="search"),
        ),
    ]


def _conversation_attacks(cls: type[message.Message]) -> Callable[[World], list[Attack]]:
    def attacks(w: World) -> list[Attack]:
        return [
            _a("B names A's session", w.key_b, cls(end_user_id="alice", session_id=w.session_a)),
            _a(
                "bob names alice's session", w.key_a, cls(end_user_id="bob", session_id=w.session_a)
            ),
        ]

    return attacks


def _agent_attacks(cls: type[message.Message]) -> Callable[[World], list[Attack]]:
    def attacks(w: World) -> list[Attack]:
        return [_a("B names A's agent", w.key_b, cls(slug=AGENT_SLUG))]

    return attacks


def _compute_session_attacks(cls: type[message.Message]) -> Callable[[World], list[Attack]]:
    def attacks(w: World) -> list[Attack]:
        return [_a("B names A's compute session", w.key_b, cls(session_id=w.compute_a))]

    return attacks


def _ledger_attacks(cls: type[message.Message], **extra: int) -> Callable[[World], list[Attack]]:
    def attacks(w: World) -> list[Attack]:
        return [
            _a("B names sandbox A", w.key_b, cls(sandbox_id=w.sandbox_a, **extra)),
            _a(
                "B filters on A's run", w.key_b, cls(filter=L.LedgerFilter(run_id=w.run_a), **extra)
            ),
            _a(
                "B filters on alice",
                w.key_b,
                cls(filter=L.LedgerFilter(end_user_id="alice"), **extra),
            ),
        ]

    return attacks


def _sandbox_attacks(build: Callable[[World], message.Message]) -> Callable[[World], list[Attack]]:
    def attacks(w: World) -> list[Attack]:
        return [
            _a("A's own key administers", w.key_a, build(w), *DENIED, ok=False),
            _a("B's key administers A", w.key_b, build(w), *DENIED, ok=False),
        ]

    return attacks


def _pause_attacks(build: Callable[[World], message.Message]) -> Callable[[World], list[Attack]]:
    def attacks(w: World) -> list[Attack]:
        return [_a("a sandbox key sets kill switches", w.key_b, build(w), *DENIED, ok=False)]

    return attacks


def _end_user_pause(cls: type[message.Message]) -> Callable[[World], message.Message]:
    return lambda w: cls(scope=P.PAUSE_SCOPE_END_USER, sandbox_id=w.sandbox_a, target="alice")


PROBES: dict[str, Probes] = {
    "interlock.v1.AgentRouter.Run": Probes(
        "sandbox",
        lambda w: R.RunRequest(end_user_id="alice", session_id=w.session_a, message="again"),
        _run_attacks,
    ),
    "interlock.v1.Agents.PutAgent": Probes(
        "sandbox",
        lambda w: G.PutAgentRequest(
            agent=G.Agent(slug=AGENT_SLUG, provider="fake", system=AGENT_SYSTEM)
        ),
        lambda w: [
            # B gets an agent of its own by that name; A's is untouched (checked after).
            _a(
                "B overwrites A's agent slug",
                w.key_b,
                G.PutAgentRequest(
                    agent=G.Agent(slug=AGENT_SLUG, provider="fake", system="hijacked")
                ),
            ),
        ],
        owner_sees=AGENT_SYSTEM,
    ),
    "interlock.v1.Agents.GetAgent": Probes(
        "sandbox",
        lambda w: G.GetAgentRequest(slug=AGENT_SLUG),
        _agent_attacks(G.GetAgentRequest),
        owner_sees=AGENT_SYSTEM,
    ),
    "interlock.v1.Agents.ListAgents": Probes(
        "sandbox",
        lambda w: G.ListAgentsRequest(),
        lambda w: [_a("B lists agents", w.key_b, G.ListAgentsRequest())],
        owner_sees=AGENT_SYSTEM,
    ),
    "interlock.v1.Agents.DeleteAgent": Probes(
        "sandbox",
        lambda w: G.DeleteAgentRequest(slug=AGENT_SLUG),
        _agent_attacks(G.DeleteAgentRequest),
    ),
    "interlock.v1.Compute.SetPause": Probes(
        "operator",
        _end_user_pause(P.SetPauseRequest),
        _pause_attacks(_end_user_pause(P.SetPauseRequest)),
    ),
    "interlock.v1.Compute.ClearPause": Probes(
        "operator",
        _end_user_pause(P.ClearPauseRequest),
        _pause_attacks(_end_user_pause(P.ClearPauseRequest)),
    ),
    "interlock.v1.Compute.ListPauses": Probes(
        "operator", lambda w: P.ListPausesRequest(), _pause_attacks(lambda w: P.ListPausesRequest())
    ),
    "interlock.v1.Compute.ListComputeSessions": Probes(
        "either",
        lambda w: P.ListComputeSessionsRequest(),
        lambda w: [
            _a("B lists its sessions", w.key_b, P.ListComputeSessionsRequest()),
            # INVALID_ARGUMENT, where the Ledger says PERMISSION_DENIED: either reveals nothing.
            _a(
                "B names sandbox A",
                w.key_b,
                P.ListComputeSessionsRequest(sandbox_id=w.sandbox_a),
                S.INVALID_ARGUMENT,
                S.PERMISSION_DENIED,
            ),
            _a("B filters on alice", w.key_b, P.ListComputeSessionsRequest(end_user_id="alice")),
        ],
        owner_sees="compute",
    ),
    "interlock.v1.Compute.SuspendComputeSession": Probes(
        "either",
        lambda w: P.SuspendComputeSessionRequest(session_id=w.compute_a),
        _compute_session_attacks(P.SuspendComputeSessionRequest),
    ),
    "interlock.v1.Compute.ResumeComputeSession": Probes(
        "either",
        lambda w: P.ResumeComputeSessionRequest(session_id=w.compute_a),
        _compute_session_attacks(P.ResumeComputeSessionRequest),
    ),
    "interlock.v1.Compute.DestroyComputeSession": Probes(
        "either",
        lambda w: P.DestroyComputeSessionRequest(session_id=w.compute_a),
        _compute_session_attacks(P.DestroyComputeSessionRequest),
    ),
    "interlock.v1.Compute.ListComputeProviders": Probes(
        "either", lambda w: P.ListComputeProvidersRequest(), _none
    ),
    "interlock.v1.Compute.ExplainPlacement": Probes(
        "either",
        lambda w: P.ExplainPlacementRequest(run_id=w.run_a),
        lambda w: [_a("B explains A's run", w.key_b, P.ExplainPlacementRequest(run_id=w.run_a))],
        owner_sees="compute",
    ),
    "interlock.v1.Conversations.ListConversations": Probes(
        "sandbox",
        lambda w: C.ListConversationsRequest(end_user_id="alice"),
        lambda w: [
            _a("B lists alice's", w.key_b, C.ListConversationsRequest(end_user_id="alice")),
            _a("bob lists his", w.key_a, C.ListConversationsRequest(end_user_id="bob")),
        ],
        owner_sees="session",
    ),
    "interlock.v1.Conversations.GetConversation": Probes(
        "sandbox",
        lambda w: C.GetConversationRequest(end_user_id="alice", session_id=w.session_a),
        _conversation_attacks(C.GetConversationRequest),
        owner_sees=ALICE_TEXT,
    ),
    "interlock.v1.Conversations.DeleteConversation": Probes(
        "sandbox",
        lambda w: C.DeleteConversationRequest(end_user_id="alice", session_id=w.session_a),
        _conversation_attacks(C.DeleteConversationRequest),
    ),
    "interlock.v1.Integrations.Catalog": Probes("sandbox", lambda w: I.CatalogRequest(), _none),
    "interlock.v1.Integrations.Connect": Probes(
        "sandbox",
        lambda w: I.ConnectRequest(app="github", end_user_id="alice"),
        lambda w: [
            _a("B connects for alice", w.key_b, I.ConnectRequest(app="github", end_user_id="alice"))
        ],
    ),
    "interlock.v1.Integrations.WatchConnect": Probes(
        "sandbox",
        lambda w: I.WatchConnectRequest(flow_id=w.flow_a),
        lambda w: [_a("B watches A's flow", w.key_b, I.WatchConnectRequest(flow_id=w.flow_a))],
    ),
    "interlock.v1.Integrations.AddMcpServer": Probes(
        "sandbox",
        lambda w: I.AddMcpServerRequest(name="victim-mcp", url="https://mcp.victim.example/mcp"),
        lambda w: [
            _a(
                "B adds a server by A's name",
                w.key_b,
                I.AddMcpServerRequest(
                    name="victim-mcp", url="https://mcp.attacker.example/mcp", end_user_id="alice"
                ),
                S.INVALID_ARGUMENT,
            )
        ],
    ),
    "interlock.v1.Integrations.ListIntegrations": Probes(
        "sandbox",
        lambda w: I.ListIntegrationsRequest(end_user_id="alice"),
        lambda w: [
            _a("B lists alice's", w.key_b, I.ListIntegrationsRequest(end_user_id="alice")),
            _a("B lists all", w.key_b, I.ListIntegrationsRequest(include_disconnected=True)),
            _a("bob lists his", w.key_a, I.ListIntegrationsRequest(end_user_id="bob")),
        ],
        owner_sees="integration",
    ),
    "interlock.v1.Integrations.Disconnect": Probes(
        "sandbox",
        lambda w: I.DisconnectRequest(integration_id=w.integration_a),
        lambda w: [
            _a("B disconnects A's", w.key_b, I.DisconnectRequest(integration_id=w.integration_a))
        ],
    ),
    "interlock.v1.Ledger.ListLedgerEntries": Probes(
        "either",
        lambda w: L.ListLedgerEntriesRequest(),
        _ledger_attacks(L.ListLedgerEntriesRequest),
        owner_sees="run",
    ),
    "interlock.v1.Ledger.SummarizeUsage": Probes(
        "either",
        lambda w: L.SummarizeUsageRequest(group_by=L.USAGE_GROUP_BY_RUN),
        _ledger_attacks(L.SummarizeUsageRequest, group_by=L.USAGE_GROUP_BY_RUN),
        owner_sees="run",
    ),
}
_SANDBOX_RPCS: dict[str, Callable[[World], message.Message]] = {
    "CreateSandbox": lambda w: X.CreateSandboxRequest(name="evil"),
    "GetSandbox": lambda w: X.GetSandboxRequest(sandbox_id=w.sandbox_a),
    "ListSandboxes": lambda w: X.ListSandboxesRequest(),
    "DeleteSandbox": lambda w: X.DeleteSandboxRequest(sandbox_id=w.sandbox_a),
    "SetQuotas": lambda w: X.SetQuotasRequest(
        sandbox_id=w.sandbox_a, quotas=X.Quotas(max_concurrent_runs=1)
    ),
    "CreateApiKey": lambda w: X.CreateApiKeyRequest(sandbox_id=w.sandbox_a, name="evil"),
    "ListApiKeys": lambda w: X.ListApiKeysRequest(sandbox_id=w.sandbox_a),
    "RevokeApiKey": lambda w: X.RevokeApiKeyRequest(sandbox_id=w.sandbox_a, key_id=w.key_a_id),
    "SetSecret": lambda w: X.SetSecretRequest(sandbox_id=w.sandbox_a, name="victim", value="evil"),
    "ListSecrets": lambda w: X.ListSecretsRequest(sandbox_id=w.sandbox_a),
    "DeleteSecret": lambda w: X.DeleteSecretRequest(sandbox_id=w.sandbox_a, name="victim"),
}
for _name, _build in _SANDBOX_RPCS.items():
    PROBES[f"interlock.v1.Sandboxes.{_name}"] = Probes("operator", _build, _sandbox_attacks(_build))

# Sends that change A's data: no positive control (it would destroy what later checks need).
_MUTATING = (
    "Delete",
    "Revoke",
    "Destroy",
    "Suspend",
    "Resume",
    "Disconnect",
    "Set",
    "Clear",
    "Create",
    "Put",
    "Add",
    "Connect",
)


# ---- sending and judging -----------------------------------------------------------------


async def send(
    w: World, rpc: Rpc, request: message.Message, md: tuple[tuple[str, str], ...]
) -> tuple[S, bytes, str]:
    """Call ``rpc``; return its status, everything it answered (serialized) and the details."""
    answered: list[bytes] = []
    try:
        if rpc.server_streaming:
            call = w.channel.unary_stream(
                rpc.path,
                request_serializer=type(request).SerializeToString,
                response_deserializer=rpc.response.FromString,
            )(request, metadata=md, timeout=20)
            async for item in call:
                answered.append(item.SerializeToString())
                if rpc.name == "WatchConnect":
                    break  # a pending flow streams until it ends
        else:
            response = await w.channel.unary_unary(
                rpc.path,
                request_serializer=type(request).SerializeToString,
                response_deserializer=rpc.response.FromString,
            )(request, metadata=md, timeout=20)
            answered.append(response.SerializeToString())
    except grpc.aio.AioRpcError as exc:
        return exc.code(), b"".join(answered), exc.details() or ""
    return S.OK, b"".join(answered), ""


def leaks(w: World, request: message.Message, answer: bytes, details: str) -> list[str]:
    """A's markers in an attacker's answer that the attacker did not send."""
    sent = request.SerializeToString()
    found = [m for m in w.text_markers if m.encode() in answer or m in details]
    found += [m for m in w.id_markers if m and m.encode() in answer and m.encode() not in sent]
    return found


async def assert_a_intact(w: World) -> None:
    """A's conversation, agent, integration, flow, compute session, key and secret are as
    they were: no attack changed them."""
    a = metadata(w.key_a)
    window = await conversations_grpc.ConversationsStub(w.channel).GetConversation(
        C.GetConversationRequest(end_user_id="alice", session_id=w.session_a), metadata=a
    )
    assert window.entries[0].text == ALICE_TEXT
    agent = await w.daemon.store.get_agent(w.sandbox_a, AGENT_SLUG)
    assert agent.settings["system"] == AGENT_SYSTEM
    integration = await w.daemon.store.get_integration(w.sandbox_a, w.integration_a)
    assert integration.status == "active"
    flow = await w.daemon.store.get_connect_flow(w.sandbox_a, w.flow_a)
    assert flow.status == "pending"
    compute = await w.daemon.store.get_compute_session(w.compute_a)
    assert compute.status == "suspended"
    assert await w.daemon.store.get_secret(w.sandbox_a, "victim") is not None
    assert (await w.daemon.store.get_sandbox(w.sandbox_a)).quotas.max_concurrent_runs != 1
    listed = await integrations_grpc.IntegrationsStub(w.channel).ListIntegrations(
        I.ListIntegrationsRequest(end_user_id="alice"), metadata=a
    )
    assert w.integration_a in [i.integration_id for i in listed.integrations]


def _auth_attacks(
    w: World, probes: Probes, request: message.Message
) -> list[tuple[str, tuple[tuple[str, str], ...], frozenset[S]]]:
    unauth = frozenset({S.UNAUTHENTICATED})
    out = [
        ("no key", (), unauth),
        ("a Basic credential", (("authorization", "Basic YTpi"),), unauth),
        ("an empty bearer", (("authorization", "Bearer "),), unauth),
        ("a forged sandbox key", metadata("ilk_" + "A" * 43), unauth),
        ("a forged operator key", metadata("ilop_" + "A" * 43), unauth),
        ("a key with junk after it", metadata(w.key_a + "x"), unauth),
        ("a revoked key", metadata(w.revoked_key), unauth),
        (
            "two authorization headers",
            (("authorization", "Bearer nope"), ("authorization", f"Bearer {w.key_a}")),
            unauth,
        ),
    ]
    if probes.needs == "sandbox":
        out.append(("the operator key", metadata(w.operator_key), frozenset(DENIED)))
    return out


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("name", sorted(PROBES), ids=lambda n: n.removeprefix("interlock.v1."))
async def test_no_caller_outside_the_tenant_gets_its_data(world: World, name: str) -> None:
    """No key, malformed, forged and revoked keys, the wrong kind of key, another sandbox's
    key with this sandbox's ids and another end user's ids are refused (UNAUTHENTICATED,
    PERMISSION_DENIED or NOT_FOUND) or answered without a trace of the tenant's data; the
    tenant's data is unchanged afterwards."""
    w = world
    rpc = _RPCS[name]
    probes = PROBES[name]
    target = probes.target(w)
    failures: list[str] = []
    for label, md, allowed in _auth_attacks(w, probes, target):
        code, answer, details = await send(w, rpc, target, md)
        if code not in allowed:
            failures.append(
                f"{label}: {code.name} {details!r}, expected {sorted(c.name for c in allowed)}"
            )
        if found := leaks(w, target, answer, details):
            failures.append(f"{label}: leaked {found}")
    for attack in probes.attacks(w):
        code, answer, details = await send(w, rpc, attack.request, metadata(attack.key))
        if code != S.OK and code not in attack.refused:
            failures.append(f"{attack.label}: {code.name} {details!r}")
        elif code == S.OK and not attack.ok:
            failures.append(f"{attack.label}: answered OK")
        if found := leaks(w, attack.request, answer, details):
            failures.append(f"{attack.label}: {code.name}, leaked {found}")
    if not rpc.name.startswith(_MUTATING):
        owner = w.operator_key if probes.needs == "operator" else w.key_a
        code, answer, details = await send(w, rpc, target, metadata(owner))
        assert code == S.OK, f"positive control: {code.name} {details}"
        if probes.owner_sees:
            wanted = {
                "session": w.session_a,
                "compute": w.compute_a,
                "integration": w.integration_a,
                "run": w.run_a,
            }.get(probes.owner_sees, probes.owner_sees)
            assert wanted.encode() in answer, f"positive control: the owner's answer lacks {wanted}"
    assert not failures, "\n".join(failures)
    await assert_a_intact(w)


def test_every_rpc_has_probes() -> None:
    """Every RPC of every interlock.v1 service (from the descriptors) is probed here."""
    missing = sorted(set(_RPCS) - set(PROBES))
    assert not missing, f"RPCs without tenancy probes: {missing}"
    assert not set(PROBES) - set(_RPCS), "probes for RPCs that no longer exist"
