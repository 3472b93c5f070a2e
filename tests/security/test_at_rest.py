"""What a tenant sends is not readable at rest: not in the database, its WAL, nor the log.

A real daemon process (its log is its stderr, in a file) is given a
distinctive string in every field a tenant supplies — the message, the system
prompt, labels, the request id, the end user id, a saved agent's settings, an
MCP server's headers and bearer token, a sandbox secret — and the model
answers with one too. Every file under the data directory (the database, its
WAL and shared memory, whatever else the daemon keeps) and the log are then
searched for each string, while the daemon runs (the WAL holds the recent
writes) and after it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from interlock.v1 import (
    agents_pb2,
    agents_pb2_grpc,
    integrations_pb2,
    integrations_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
    sandboxes_pb2,
    sandboxes_pb2_grpc,
)
from tests.fakes.openai import Reply
from tests.fuzz.target import ChildDaemon, FakeInThread

#: One marker per tenant-supplied field; letters and digits fit every field's charset.
MARKERS = {
    "message": "ZQmessage4f7k",
    "system": "ZQsystem4f7k",
    "labels.key": "ZQlabelkey4f7k",
    "labels.value": "ZQlabelvalue4f7k",
    "request_id": "ZQrequestid4f7k",
    "end_user_id": "ZQenduser4f7k",
    "agent.name": "ZQagentname4f7k",
    "agent.system": "ZQagentsystem4f7k",
    "mcp.headers": "ZQmcpheader4f7k",
    "mcp.bearer_token": "ZQmcpbearer4f7k",
    "secret.value": "ZQsecretvalue4f7k",
    "model answer": "ZQanswer4f7k",
}


def _found(data_dir: Path, log: Path, markers: dict[str, str]) -> dict[str, list[str]]:
    """For each field, the files (relative names) whose bytes hold its marker."""
    files = [p for p in data_dir.rglob("*") if p.is_file()] + [log]
    contents = {
        (p.relative_to(data_dir).as_posix() if p != log else "log"): p.read_bytes() for p in files
    }
    return {
        field: [name for name, data in contents.items() if marker.encode() in data]
        for field, marker in markers.items()
    }


@pytest.fixture(scope="module")
def exposure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, set[str]]]:
    """Where each marker was found at rest, while running and after a stop."""
    fake = FakeInThread()
    fake.fake.default = Reply().text("The answer is ", MARKERS["model answer"]).usage(20, 5)
    base_url = fake.start()
    daemon = ChildDaemon(
        Path(tmp_path_factory.mktemp("at-rest")),
        {"fake": {"kind": "openai", "base_url": base_url, "default_model": "fake-model"}},
        default_provider="fake",
        shutdown_grace_seconds=1,
        shutdown_announce_seconds=0,
    )
    try:
        daemon.start()
        session_id = _write_everything(daemon)
        # Control: ids are stored in clear, so the search does read the store's files.
        # While running the recent writes are in the WAL; after the stop, in the database.
        control = _found(daemon.data_dir, daemon.log_path, {"session id": session_id})
        assert any(name.endswith("-wal") for name in control["session id"]), control
        seen: dict[str, set[str]] = {field: set() for field in MARKERS}
        for field, names in _found(daemon.data_dir, daemon.log_path, MARKERS).items():
            seen[field].update(names)
        assert daemon.stop() == 0, daemon.logs()[-3000:]
        control = _found(daemon.data_dir, daemon.log_path, {"session id": session_id})
        assert any(name.endswith(".db") for name in control["session id"]), control
        for field, names in _found(daemon.data_dir, daemon.log_path, MARKERS).items():
            seen[field].update(names)
        yield seen
    finally:
        daemon.stop()
        fake.stop()


def _write_everything(daemon: ChildDaemon) -> str:
    """Send every marker through the API; return the conversation's id."""
    sandbox = (("authorization", f"Bearer {daemon.api_key}"),)
    operator = (("authorization", f"Bearer {daemon.operator_key}"),)
    with grpc.insecure_channel(daemon.address) as channel:
        sandboxes = sandboxes_pb2_grpc.SandboxesStub(channel)
        (sandbox_id,) = [
            s.sandbox_id
            for s in sandboxes.ListSandboxes(
                sandboxes_pb2.ListSandboxesRequest(), metadata=operator
            ).sandboxes
        ]
        sandboxes.SetSecret(
            sandboxes_pb2.SetSecretRequest(
                sandbox_id=sandbox_id, name="api-token", value=MARKERS["secret.value"]
            ),
            metadata=operator,
        )
        agents_pb2_grpc.AgentsStub(channel).PutAgent(
            agents_pb2.PutAgentRequest(
                agent=agents_pb2.Agent(
                    slug="helper",
                    name=MARKERS["agent.name"],
                    provider="fake",
                    system=MARKERS["agent.system"],
                )
            ),
            metadata=sandbox,
        )
        integrations_pb2_grpc.IntegrationsStub(channel).AddMcpServer(
            integrations_pb2.AddMcpServerRequest(
                name="docs",
                url="https://mcp.example.com/mcp",
                end_user_id="other-user",
                bearer_token=MARKERS["mcp.bearer_token"],
                headers={"X-Api-Key": MARKERS["mcp.headers"]},
            ),
            metadata=sandbox,
        )
        router = router_pb2_grpc.AgentRouterStub(channel)
        first = list(
            router.Run(
                router_pb2.RunRequest(
                    end_user_id=MARKERS["end_user_id"],
                    message=MARKERS["message"],
                    system=MARKERS["system"],
                    request_id=MARKERS["request_id"],
                    labels={MARKERS["labels.key"]: MARKERS["labels.value"]},
                ),
                metadata=sandbox,
                timeout=30,
            )
        )
        assert first[-1].HasField("finish"), first[-1]
        second = list(
            router.Run(
                router_pb2.RunRequest(
                    end_user_id=MARKERS["end_user_id"],
                    session_id=first[0].run_started.session_id,
                    agent="helper",
                    message="and again",
                ),
                metadata=sandbox,
                timeout=30,
            )
        )
        assert second[-1].HasField("finish"), second[-1]
        return first[0].run_started.session_id


@pytest.mark.parametrize("field", list(MARKERS))
def test_tenant_supplied_field_is_not_readable_at_rest(
    exposure: dict[str, set[str]], field: str
) -> None:
    """A string a tenant put in this field appears in no file of the data directory
    (database, WAL, shared memory) and in no line of the daemon's log."""
    assert exposure[field] == set(), f"{field} in clear in: {sorted(exposure[field])}"
