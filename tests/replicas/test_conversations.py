"""Across replicas, a conversation is one conversation: started on one replica, it continues on
any other and on another provider, and its window holds every turn once, in order."""

from __future__ import annotations

from interlock.v1 import conversations_pb2 as cpb
from tests.fakes.openai import FakeOpenAI, Reply
from tests.replicas.cluster import Cluster


async def test_a_conversation_continues_on_other_replicas_and_providers(
    cluster: Cluster, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    """A session started on replica 0 continues on replica 1 with another provider and on
    replica 2, then over the round-robin channel; each turn's model sees every earlier turn,
    and the window holds each turn once, in order."""
    fake_a.responder = lambda body: Reply().text(f"a{len(body['messages'])}")
    fake_b.responder = lambda body: Reply().text(f"b{len(body['messages'])}")
    first = await cluster.client_of(0).run_text("one", end_user_id="u-1", provider="fake")
    session = first.session_id
    assert first.ok
    assert session
    said = [("one", first.text)]
    plan = [(1, "fake_b"), (2, "fake"), (None, "fake_b"), (None, "fake"), (None, "fake_b")]
    run_ids = [first.run_id]
    for turn, (replica, provider) in enumerate(plan, start=2):
        client = cluster.client if replica is None else cluster.client_of(replica)
        message = f"turn {turn}"
        outcome = await client.run_text(
            message, end_user_id="u-1", session_id=session, provider=provider
        )
        assert outcome.ok, outcome.error
        assert outcome.session_id == session
        said.append((message, outcome.text))
        run_ids.append(outcome.run_id)
    # Each upstream saw the whole conversation so far, whichever replica sent it.
    last_request = (fake_b if plan[-1][1] == "fake_b" else fake_a).requests[-1].body
    history = [(m["role"], m["content"]) for m in last_request["messages"]]
    expected: list[tuple[str, str]] = []
    for message, answer in said[:-1]:
        expected += [("user", message), ("assistant", answer)]
    assert history[-len(expected) - 1 :] == [*expected, ("user", said[-1][0])]
    assert [cluster.served_by(run_id) for run_id in run_ids[:3]] == [0, 1, 2]

    window = await cluster.client.conversations.get(session, end_user_id="u-1")
    assert [(e.seq, e.kind, e.text, e.run_id) for e in window.entries] == [
        entry
        for seq, ((message, answer), run_id) in enumerate(zip(said, run_ids, strict=True))
        for entry in (
            (2 * seq + 1, cpb.ENTRY_KIND_USER, message, run_id),
            (2 * seq + 2, cpb.ENTRY_KIND_ASSISTANT, answer, run_id),
        )
    ]
    assert [e.provider for e in window.entries[1::2]] == ["fake", *(p for _, p in plan)]
