"""The ``interlock`` CLI, called in-process against a real gRPC server on port 0."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import socket
import sys
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import interlock
from interlock.cli import amain, build_parser, main
from interlock.v1 import conversations_pb2, events_pb2

CLI = Callable[..., Awaitable[tuple[int, str, str]]]
CLIENTS_DIR = Path(__file__).resolve().parents[2] / "clients" / "python"


@pytest.fixture
def cli(fake_daemon, capsys) -> CLI:
    """Run `interlock <argv>` against the test server with both keys; return (code, out, err)."""

    async def run(*argv: str, keys: bool = True) -> tuple[int, str, str]:
        connection = ["--address", fake_daemon.address]
        if keys:
            connection += ["--api-key", fake_daemon.api_key]
            connection += ["--operator-key", fake_daemon.operator_key]
        code = await amain([*connection, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


# -- usage -----------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["sandbox"],
        ["run"],
        ["run", "hi", "--bogus"],
        ["run", "hi", "--label", "no-equals-sign"],
        ["run", "hi", "--timeout", "0"],
        ["sandbox", "create", "acme", "--max-concurrent-runs", "-1"],
        ["keys", "create"],
        ["conversations", "show"],
    ],
)
async def test_bad_arguments_exit_2_with_usage(argv, capsys):
    """Malformed command lines exit 2 with argparse's usage message and nothing on stdout."""
    assert await amain(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "usage: interlock" in err


@pytest.mark.parametrize(
    ("argv", "variable"),
    [
        (["run", "hi"], "INTERLOCK_API_KEY"),
        (["conversations", "list"], "INTERLOCK_API_KEY"),
        (["sandbox", "list"], "INTERLOCK_OPERATOR_KEY"),
        (["keys", "list", "--sandbox", "sbx_1"], "INTERLOCK_OPERATOR_KEY"),
    ],
)
async def test_missing_key_is_a_usage_error(argv, variable, capsys):
    """A command without its key configured exits 2, naming the flag and the variable."""
    assert await amain(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: no ")
    assert variable in err


async def test_help_and_version_exit_0(capsys):
    """--help and --version print and exit 0 instead of raising SystemExit."""
    assert await amain(["--help"]) == 0
    assert "run" in capsys.readouterr().out
    assert await amain(["--version"]) == 0
    assert capsys.readouterr().out == "interlock 0.1.0\n"


def _readme_commands() -> list[str]:
    """Every `interlock` command of the README's code blocks, continuation lines joined."""
    commands, in_block, continued = [], False, False
    for line in (CLIENTS_DIR / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_block, continued = not in_block, False
        elif in_block and (continued or line.startswith("interlock ")):
            piece = line.split(" | ")[0].strip()
            if continued:
                commands[-1] = f"{commands[-1]} {piece}"
            else:
                commands.append(piece)
            continued = commands[-1].endswith("\\")
            if continued:
                commands[-1] = commands[-1][:-1].rstrip()
    return commands


@pytest.mark.parametrize("command", _readme_commands())
def test_readme_commands_parse(command):
    """Every `interlock` command line shown in the README is accepted by the parser."""
    build_parser().parse_args(shlex.split(command)[1:])


def test_version_matches_the_package_metadata():
    """interlock.__version__ (printed by --version) equals the version in pyproject.toml."""
    with (CLIENTS_DIR / "pyproject.toml").open("rb") as f:
        assert tomllib.load(f)["project"]["version"] == interlock.__version__


# -- run -------------------------------------------------------------------


async def test_run_streams_the_answer_and_sends_the_bearer_key(cli, fake_daemon):
    """`interlock run` sends `authorization: Bearer <key>` and renders the scripted stream."""
    code, out, err = await cli("run", "weather in Paris?")
    assert code == 0
    assert fake_daemon.router.authorization == [f"Bearer {fake_daemon.api_key}"]
    assert out == "Let me check. It is 21 °C in Paris.\n"
    assert err.splitlines() == [
        '→ get_weather({"city":"Paris"})',
        '← get_weather: {"temp_c":21}',
        "end_turn · tokens: 12 in, 34 out, 5 cache read, 0 cache write · $0.000123 · local/smollm2",
        "session ses_01test (continue with --session ses_01test)",
    ]
    request = fake_daemon.router.requests[0]
    assert request.message == "weather in Paris?"
    assert request.end_user_id == "default"


async def test_run_flags_reach_the_request(fake_daemon, capsys):
    """Every run flag lands in its RunRequest field; connection flags work after the subcommand."""
    code = await amain(
        [
            "run",
            "--address", fake_daemon.address,
            "--api-key", fake_daemon.api_key,
            "--provider", "openai",
            "--model", "gpt-test",
            "--session", "ses_prev",
            "--end-user", "u-42",
            "--system", "be brief",
            "--request-id", "req-1",
            "--tool", "get_weather",
            "--tool", "search",
            "--label", "cohort=b",
            "--label", "exp=x=y",
            "--max-output-tokens", "64",
            "--timeout", "30",
            "hello",
        ]
    )  # fmt: skip
    capsys.readouterr()
    assert code == 0
    request = fake_daemon.router.requests[0]
    assert (request.provider, request.model, request.session_id) == (
        "openai",
        "gpt-test",
        "ses_prev",
    )
    assert (request.end_user_id, request.system, request.request_id) == (
        "u-42",
        "be brief",
        "req-1",
    )
    assert list(request.tools) == ["get_weather", "search"]
    assert dict(request.labels) == {"cohort": "b", "exp": "x=y"}
    assert request.max_output_tokens == 64


async def test_run_json_prints_one_event_object_per_line(cli, fake_daemon):
    """--json prints each event as one JSON object per line with proto field names, nothing else."""
    code, out, err = await cli("run", "--json", "hi")
    assert code == 0
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == len(fake_daemon.router.script)
    parsed = [json.loads(line) for line in lines]
    assert [int(event["seq"]) for event in parsed] == list(range(1, len(lines) + 1))
    assert parsed[0]["run_started"]["session_id"] == "ses_01test"
    assert parsed[1]["text_delta"] == {"text": "Let me check. "}
    assert parsed[-1]["finish"]["stop_reason"] == "STOP_REASON_END_TURN"


async def test_run_error_event_exits_1(cli, fake_daemon, events):
    """An error event ends the run with `error: CODE: message` on stderr and exit code 1."""
    fake_daemon.router.script = events(
        events_pb2.RunStarted(session_id="ses_1"),
        events_pb2.TextDelta(text="Partial"),
        events_pb2.Error(code="UNAVAILABLE", message="provider went away"),
    )
    code, out, err = await cli("run", "hi")
    assert code == 1
    assert out == "Partial\n"
    assert "error: UNAVAILABLE: provider went away\n" in err

    code, out, err = await cli("run", "--json", "hi")
    assert code == 1
    assert [json.loads(line)["seq"] for line in out.splitlines()] == ["1", "2", "3"]
    assert err == "error: UNAVAILABLE: provider went away\n"


async def test_run_refused_by_the_server_prints_one_error_line(cli, fake_daemon):
    """A status error before the first event prints `error: CODE: details`, exits 1, no stdout."""
    code, out, err = await cli("--api-key", "wrong-key", "run", "hi", keys=False)
    assert code == 1
    assert out == ""
    assert err == "error: UNAUTHENTICATED: unknown API key\n"
    assert fake_daemon.router.authorization == ["Bearer wrong-key"]


async def test_keys_and_address_fall_back_to_the_environment(cli, fake_daemon, monkeypatch):
    """INTERLOCK_ADDRESS and INTERLOCK_API_KEY are used when no flag is given."""
    monkeypatch.setenv("INTERLOCK_ADDRESS", fake_daemon.address)
    monkeypatch.setenv("INTERLOCK_API_KEY", fake_daemon.api_key)
    code = await amain(["run", "hi"])
    assert code == 0
    assert fake_daemon.router.authorization == [f"Bearer {fake_daemon.api_key}"]


async def test_unreachable_daemon_is_a_server_error(capsys):
    """Nothing listening at --address gives `error: UNAVAILABLE: ...` and exit code 1."""
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = await amain(["--address", f"127.0.0.1:{port}", "--api-key", "k", "run", "hi"])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err.startswith("error: UNAVAILABLE: ")
    assert err.count("\n") == 1


async def test_sync_main_runs_its_own_event_loop(fake_daemon, capsys):
    """main(argv) (the console script) returns the exit code when called in-process."""
    argv = ["--address", fake_daemon.address, "--api-key", fake_daemon.api_key, "run", "hi"]
    # main() calls asyncio.run, so it needs a thread without a running loop.
    assert await asyncio.to_thread(main, argv) == 0
    assert capsys.readouterr().out == "Let me check. It is 21 °C in Paris.\n"


async def test_ctrl_c_exits_130_and_cancels_the_run(fake_daemon):
    """SIGINT during a run exits 130 without a traceback and cancels the call on the server."""
    fake_daemon.router.hold = True
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(CLIENTS_DIR), os.environ.get("PYTHONPATH", "")]),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "interlock.cli",
        "--address", fake_daemon.address, "--api-key", fake_daemon.api_key, "run", "hi",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        await asyncio.wait_for(fake_daemon.router.started.wait(), 30)
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 130
    assert b"Traceback" not in err
    await asyncio.wait_for(fake_daemon.router.cancelled.wait(), 30)


# -- sandbox and keys ------------------------------------------------------


async def test_sandbox_lifecycle(cli, fake_daemon):
    """sandbox create/get/list/set-quotas/delete round-trip with the operator key."""
    code, out, _ = await cli("sandbox", "create", "acme", "--max-concurrent-runs", "4")
    assert code == 0
    assert fake_daemon.sandboxes.requests[0].name == "acme"
    sandbox_id = next(iter(fake_daemon.sandboxes.sandboxes))
    assert f"sandbox_id                        {sandbox_id}\n" in out
    assert "max_concurrent_runs               4\n" in out
    assert "max_tokens_per_day                unlimited\n" in out

    code, out, _ = await cli("sandbox", "get", sandbox_id, "--json")
    assert code == 0
    parsed = json.loads(out)
    assert parsed["name"] == "acme"
    assert parsed["quotas"] == {"max_concurrent_runs": 4}

    code, out, _ = await cli("sandbox", "set-quotas", sandbox_id, "--max-tokens-per-day", "1000")
    assert code == 0
    assert "max_concurrent_runs               unlimited\n" in out  # replaced, not merged

    code, out, _ = await cli("sandbox", "list")
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["ID", "NAME", "CREATED", "RUNS", "RUNS/USER", "TOKENS/DAY"]
    assert row.split() == [
        sandbox_id,
        "acme",
        "2027-01-15T08:00:00Z",
        "unlimited",
        "unlimited",
        "1000",
    ]

    code, out, _ = await cli("sandbox", "delete", sandbox_id)
    assert (code, out) == (0, f"deleted sandbox {sandbox_id}\n")
    code, out, err = await cli("sandbox", "list")
    assert (code, out, err) == (0, "", "no sandboxes\n")


async def test_sandbox_not_found_is_a_server_error(cli):
    """An unknown sandbox id prints the server's NOT_FOUND and exits 1."""
    code, out, err = await cli("sandbox", "get", "sbx_nope")
    assert (code, out) == (1, "")
    assert err == "error: NOT_FOUND: sandbox sbx_nope does not exist\n"


async def test_keys_create_prints_the_secret_alone_on_stdout(cli, fake_daemon):
    """keys create puts only the secret on stdout and warns on stderr it is shown only now."""
    _, _, _ = await cli("sandbox", "create", "acme")
    sandbox_id = next(iter(fake_daemon.sandboxes.sandboxes))
    code, out, err = await cli("keys", "create", "--sandbox", sandbox_id, "--name", "ci")
    assert code == 0
    assert out == "ik_secret_1\n"
    assert "shown only now" in err
    assert fake_daemon.sandboxes.requests[-1].name == "ci"

    code, out, err = await cli("keys", "create", "--sandbox", sandbox_id, "--json")
    assert code == 0
    assert json.loads(out)["secret"] == "ik_secret_2"
    assert "shown only now" in err


async def test_keys_list_and_revoke(cli, fake_daemon):
    """keys list shows each key's status; keys revoke revokes the named key."""
    await cli("sandbox", "create", "acme")
    sandbox_id = next(iter(fake_daemon.sandboxes.sandboxes))
    await cli("keys", "create", "--sandbox", sandbox_id)
    key_id = next(iter(fake_daemon.sandboxes.keys))

    code, out, _ = await cli("keys", "list", "--sandbox", sandbox_id)
    assert code == 0
    assert out.splitlines()[1].split() == [
        key_id,
        "default",
        "ik_secre…",
        "2027-01-15T08:00:00Z",
        "active",
    ]

    code, out, _ = await cli("keys", "revoke", "--sandbox", sandbox_id, key_id)
    assert (code, out) == (0, f"revoked key {key_id} (default)\n")

    code, out, _ = await cli("keys", "list", "--sandbox", sandbox_id, "--json")
    assert code == 0
    (line,) = out.splitlines()
    assert json.loads(line)["revoke_time"] == "2027-01-15T08:01:00Z"


# -- conversations ---------------------------------------------------------


def _entries() -> list[conversations_pb2.WindowEntry]:
    k = conversations_pb2
    return [
        k.WindowEntry(seq=1, kind=k.ENTRY_KIND_USER, text="weather in Paris?"),
        k.WindowEntry(seq=2, kind=k.ENTRY_KIND_TOOL_CALL, tool_name="get_weather", text="{}"),
        k.WindowEntry(
            seq=3, kind=k.ENTRY_KIND_ASSISTANT, text="21 °C.", provider="local", model="m"
        ),
    ]


async def test_conversations_show_renders_every_page(cli, fake_daemon):
    """conversations show follows page tokens and prints role-prefixed entries for the end user."""
    fake_daemon.conversations.add("u-1", "ses_1", _entries())
    code, out, _ = await cli("conversations", "show", "ses_1", "--end-user", "u-1")
    assert code == 0
    assert out.splitlines()[1:] == [
        "user: weather in Paris?",
        "→ get_weather({})",
        "assistant (local/m): 21 °C.",
    ]
    assert out.startswith("session ses_1 · end user u-1 · 3 entries")
    assert fake_daemon.router.authorization == []  # conversations used the sandbox key too
    assert len(fake_daemon.conversations.requests) == 2  # the fake pages by 2


async def test_conversations_show_json_merges_pages(cli, fake_daemon):
    """conversations show --json prints one object holding the summary and every entry."""
    fake_daemon.conversations.add("u-1", "ses_1", _entries())
    code, out, _ = await cli("conversations", "show", "ses_1", "--end-user", "u-1", "--json")
    assert code == 0
    (line,) = out.splitlines()
    parsed = json.loads(line)
    assert parsed["conversation"]["session_id"] == "ses_1"
    assert [e["seq"] for e in parsed["entries"]] == ["1", "2", "3"]


async def test_conversations_are_addressed_by_end_user(cli, fake_daemon):
    """list shows only the end user's sessions; another end user's session is NOT_FOUND."""
    fake_daemon.conversations.add("u-1", "ses_1", _entries())
    code, out, _ = await cli("conversations", "list", "--end-user", "u-1")
    assert code == 0
    assert out.splitlines()[1].split() == ["ses_1", "2027-01-15T08:00:03Z", "3", "local/smollm2"]

    code, out, err = await cli("conversations", "list")  # the default end user has none
    assert (code, out, err) == (0, "", "no conversations for end user default\n")

    code, out, err = await cli("conversations", "show", "ses_1", "--end-user", "u-2")
    assert (code, out) == (1, "")
    assert err == "error: NOT_FOUND: session ses_1 does not exist\n"

    code, out, _ = await cli("conversations", "delete", "ses_1", "--end-user", "u-1")
    assert (code, out) == (0, "deleted conversation ses_1\n")
    assert fake_daemon.conversations.stored == {}
