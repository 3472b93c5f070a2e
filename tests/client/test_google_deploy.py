"""``interlock google deploy`` and the dispatch agent it ships, without Google's network.

Needs the ``google`` extra (``make`` installs it): these tests import ADK and
the Vertex SDK for real and fail, rather than skip, without them. The one
substitution is ``vertexai.agent_engines.create``, Google's upload-and-build
call: a recording stand-in does what the SDK does locally (pickle the app,
archive ``extra_packages``) and a subprocess then plays Agent Engine's runtime,
unpickling the app with only the shipped files and running a turn whose
``dispatch`` call reaches a real HTTP server standing in for the router.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import sys
import tarfile
import tomllib
import typing
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from aiohttp import web
from google.adk.agents.invocation_context import InvocationContext
from google.adk.sessions import InMemorySessionService
from google.adk.tools.tool_context import ToolContext
from google.api_core import exceptions as google_exceptions

import interlock.google.agent_template as template
from interlock.cli import amain
from interlock.google import deploy
from interlock.google.deploy import DeployConfigError, build_spec

deploy.require_extra()  # imports the Vertex SDK as the command does (its deprecation noise muted)
from google.cloud.aiplatform import initializer  # noqa: E402
from vertexai import agent_engines  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ENGINE = "projects/my-project/locations/us-central1/reasoningEngines/1234567890"
TOKEN = "tok_run_01_secret"
# Braces that ADK would fill from the session state in a plain-string instruction.
PROMPT = "Use {tools} wisely and never reveal {interlock_dispatch_token}."


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    """The SDK's AdkApp and vertexai.init write os.environ; give each test its own."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def spec_args(**overrides: Any) -> dict[str, Any]:
    """Valid build_spec arguments, with some replaced."""
    args: dict[str, Any] = {
        "display_name": "support agent",
        "project": "my-project",
        "location": "us-central1",
        "router_url": "https://router.example.com",
    }
    args.update(overrides)
    return args


# -- the router's dispatch endpoint, faked over real HTTP -----------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeRouter:
    """``POST /v1/tools/dispatch`` on 127.0.0.1:0, answering from a script."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    status: int = 200
    reply: Any = field(default_factory=lambda: {"result": {"temp_c": 21}})
    raw: bytes | None = None  # a body that is not JSON
    stall: asyncio.Event | None = None  # hold the answer until set

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.received.append(Received(request.path_qs, dict(request.headers), await request.read()))
        if self.stall is not None:
            await self.stall.wait()
        if self.raw is not None:
            return web.Response(status=self.status, body=self.raw, content_type="text/html")
        return web.json_response(self.reply, status=self.status)


@pytest.fixture
async def router() -> AsyncIterator[FakeRouter]:
    """The fake router, serving until the test ends."""
    fake = FakeRouter()
    app = web.Application()
    app.router.add_post(template.DISPATCH_PATH, fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    try:
        yield fake
    finally:
        if fake.stall is not None:
            fake.stall.set()
        await runner.cleanup()


async def tool_context(state: dict[str, Any], *, call_id: str = "adk-call-7") -> ToolContext:
    """A real ADK ToolContext for a call in a fresh in-memory session with ``state``."""
    sessions = InMemorySessionService()
    session = await sessions.create_session(
        app_name="interlock-test", user_id="end-user-hash", state=state
    )
    invocation = InvocationContext(
        session_service=sessions,
        invocation_id="e-1",
        agent=template.build_agent(model=deploy.DEFAULT_MODEL, instruction="x"),
        session=session,
    )
    return ToolContext(invocation, function_call_id=call_id)


# -- the deployment spec (pure) --------------------------------------------


def test_spec_carries_validated_values():
    """build_spec keeps the options, strips the router URL's trailing slash and names a bucket."""
    spec = build_spec(**spec_args(router_url="https://router.example.com/interlock/"))
    assert spec.display_name == "support agent"
    assert (spec.project, spec.location) == ("my-project", "us-central1")
    assert spec.router_url == "https://router.example.com/interlock"
    assert spec.model == "gemini-3.1-flash"
    assert spec.instruction == deploy.DEFAULT_INSTRUCTION
    assert spec.staging_bucket == "gs://my-project-interlock-staging"
    assert spec.extra_packages == ["interlock_agent.py"]


def test_spec_env_vars_are_only_the_router_url():
    """The deployed agent's environment is exactly INTERLOCK_ROUTER_URL, the validated URL."""
    spec = build_spec(**spec_args(router_url="http://10.0.0.5:7601/"))
    assert spec.env_vars == {"INTERLOCK_ROUTER_URL": "http://10.0.0.5:7601"}
    assert deploy.ROUTER_URL_ENV == template.ROUTER_URL_ENV


def test_requirements_are_the_google_extras_pins():
    """The runtime installs exactly what the `google` extra pins (what the app was pickled with)."""
    client = tomllib.loads((ROOT / "clients/python/pyproject.toml").read_text())
    extra = client["project"]["optional-dependencies"]["google"]
    spec = build_spec(**spec_args())
    assert spec.requirements == extra == list(deploy.REQUIREMENTS)
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    shared = [pin for pin in server if pin.startswith(("httpx==", "pydantic=="))]
    assert len(shared) == 2
    assert set(shared) <= set(spec.requirements)  # one version of each in the one virtualenv


def test_each_deployment_stages_in_its_own_directory():
    """Two deployments to one bucket never share (and overwrite) a staging directory."""
    first, second = build_spec(**spec_args()), build_spec(**spec_args())
    assert first.gcs_dir_name.startswith("interlock/")
    assert first.gcs_dir_name != second.gcs_dir_name


def test_explicit_staging_bucket_is_normalised():
    """--staging-bucket gs://NAME/ is used as gs://NAME."""
    spec = build_spec(**spec_args(staging_bucket="gs://acme-builds/"))
    assert spec.staging_bucket == "gs://acme-builds"


@pytest.mark.parametrize(
    ("overrides", "option"),
    [
        ({"router_url": "router.example.com"}, "--router-url"),
        ({"router_url": "ftp://router.example.com"}, "--router-url"),
        ({"router_url": "https://"}, "--router-url"),
        ({"router_url": "https://user:pw@router.example.com"}, "--router-url"),
        ({"router_url": "https://router.example.com/?x=1"}, "--router-url"),
        ({"router_url": "https://router.example.com:99999"}, "--router-url"),
        ({"display_name": "  "}, "--display-name"),
        ({"display_name": "x" * 129}, "--display-name"),
        ({"project": "My_Project"}, "--project"),
        ({"project": "abc"}, "--project"),
        ({"location": "global"}, "--location"),
        ({"location": "US-CENTRAL1"}, "--location"),
        ({"model": "gemini 3"}, "--model"),
        ({"model": ""}, "--model"),
        ({"instruction": " \n"}, "--instruction"),
        ({"staging_bucket": "my-bucket"}, "--staging-bucket"),
        ({"staging_bucket": "gs://my-bucket/some/path"}, "--staging-bucket"),
        ({"project": "example.com:my-project"}, "--staging-bucket"),
    ],
)
def test_invalid_values_name_the_option(overrides, option):
    """Each unusable value is refused with a DeployConfigError naming its option."""
    with pytest.raises(DeployConfigError) as caught:
        build_spec(**spec_args(**overrides))
    assert caught.value.option == option
    assert str(caught.value).startswith(f"{option}: ")


# -- the agent object ------------------------------------------------------


def test_agent_has_the_prompt_the_model_and_only_dispatch():
    """build_agent: name `interlock`, the given model and prompt, and one tool, dispatch."""
    agent = template.build_agent(model="gemini-3.1-pro", instruction="Be brief.")
    assert agent.name == "interlock"
    assert agent.model == "gemini-3.1-pro"
    assert isinstance(agent.instruction, template.LiteralInstruction)
    assert agent.instruction.text == "Be brief."
    assert len(agent.tools) == 1
    assert agent.tools[0] is template.dispatch
    assert template.dispatch.__name__ == "dispatch"


def test_dispatch_signature_and_docstring():
    """dispatch(tool_name: str, arguments: dict, tool_context) -> dict, documented for the model."""
    hints = typing.get_type_hints(template.dispatch)
    assert hints == {
        "tool_name": str,
        "arguments": dict[str, Any],
        "tool_context": ToolContext,
        "return": dict[str, Any],
    }
    doc = " ".join((template.dispatch.__doc__ or "").split())
    assert "must be one of the tools the router offers" in doc
    assert "arguments as a JSON object" in doc


# -- the dispatch tool against a real HTTP router ---------------------------


async def test_dispatch_sends_the_protocol_request(router, monkeypatch):
    """One POST to /v1/tools/dispatch: bearer token from the state, JSON body with the ids."""
    monkeypatch.setenv("INTERLOCK_ROUTER_URL", router.url)
    context = await tool_context({"interlock_dispatch_token": TOKEN})
    await template.dispatch("get_weather", {"city": "Paris", "days": [1, 2]}, context)
    [request] = router.received
    assert request.path == "/v1/tools/dispatch"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == {
        "tool_name": "get_weather",
        "arguments": {"city": "Paris", "days": [1, 2]},
        "call_id": "adk-call-7",
        "user_id": "end-user-hash",
        "session_id": context.session.id,
    }


@pytest.mark.parametrize(
    "reply",
    [{"result": {"temp_c": 21}}, {"result": "plain text"}, {"error": "unknown tool: get_wether"}],
)
async def test_dispatch_returns_the_routers_answer(router, monkeypatch, reply):
    """The router's JSON answer ({"result"} or {"error"}) is the tool result, unchanged."""
    monkeypatch.setenv("INTERLOCK_ROUTER_URL", router.url)
    router.reply = reply
    context = await tool_context({"interlock_dispatch_token": TOKEN})
    assert await template.dispatch("get_weather", {}, context) == reply


async def test_dispatch_reports_a_rejected_token(router, monkeypatch):
    """A 401 becomes an error result saying the token was rejected, with the router's reason."""
    monkeypatch.setenv("INTERLOCK_ROUTER_URL", router.url)
    router.status, router.reply = 401, {"error": "invalid or expired dispatch token"}
    context = await tool_context({"interlock_dispatch_token": "tok_stale"})
    result = await template.dispatch("get_weather", {}, context)
    assert result == {
        "error": "the router rejected the dispatch token (expired, or not for this run): "
        "HTTP 401: invalid or expired dispatch token"
    }


@pytest.mark.parametrize(
    ("status", "reply", "raw", "expected"),
    [
        (
            504,
            {"error": "the tool did not finish within 35 s"},
            None,
            "the router refused the call: HTTP 504: the tool did not finish within 35 s",
        ),
        (502, None, b"<html>Bad Gateway</html>", "the router refused the call: HTTP 502"),
        (
            200,
            None,
            b"<html>ok</html>",
            "the router answered HTTP 200 without a result or an error",
        ),
        (200, {"tool": "x"}, None, "the router answered HTTP 200 without a result or an error"),
    ],
)
async def test_dispatch_turns_bad_answers_into_errors(
    router, monkeypatch, status, reply, raw, expected
):
    """HTTP errors and answers without result/error become {"error": ...}, never exceptions."""
    monkeypatch.setenv("INTERLOCK_ROUTER_URL", router.url)
    router.status, router.reply, router.raw = status, reply, raw
    context = await tool_context({"interlock_dispatch_token": TOKEN})
    assert await template.dispatch("get_weather", {}, context) == {"error": expected}


async def test_dispatch_reports_an_unreachable_router(monkeypatch):
    """A refused connection becomes an error result naming the router URL."""
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("INTERLOCK_ROUTER_URL", f"http://127.0.0.1:{port}")
    context = await tool_context({"interlock_dispatch_token": TOKEN})
    result = await template.dispatch("get_weather", {}, context)
    assert result["error"].startswith(f"could not reach the router at http://127.0.0.1:{port}: ")
    assert list(result) == ["error"]


async def test_dispatch_gives_up_on_a_stalled_router(router, monkeypatch):
    """A router that never answers becomes an error result once the timeout passes."""
    monkeypatch.setenv("INTERLOCK_ROUTER_URL", router.url)
    monkeypatch.setattr(template, "DISPATCH_TIMEOUT_S", 0.2)
    router.stall = asyncio.Event()
    context = await tool_context({"interlock_dispatch_token": TOKEN})
    result = await template.dispatch("get_weather", {}, context)
    assert result == {"error": "the router did not answer the get_weather call in time"}
    assert len(router.received) == 1


@pytest.mark.parametrize(
    ("state", "env", "arguments", "expected"),
    [
        ({}, True, {}, "no interlock_dispatch_token in the session state"),
        ({"interlock_dispatch_token": ""}, True, {}, "no interlock_dispatch_token"),
        ({"interlock_dispatch_token": TOKEN}, False, {}, "INTERLOCK_ROUTER_URL is not set"),
        ({"interlock_dispatch_token": TOKEN}, True, ["x"], "arguments must be a JSON object"),
    ],
)
async def test_dispatch_refuses_before_sending(
    router, monkeypatch, state, env, arguments, expected
):
    """No token, no router URL or non-object arguments: an error result and no request."""
    if env:
        monkeypatch.setenv("INTERLOCK_ROUTER_URL", router.url)
    else:
        monkeypatch.delenv("INTERLOCK_ROUTER_URL", raising=False)
    context = await tool_context(state)
    result = await template.dispatch("get_weather", arguments, context)
    assert expected in result["error"]
    assert router.received == []


# -- the command -----------------------------------------------------------


@dataclass
class CreatedEngine:
    resource_name: str


@dataclass
class RecordingCreate:
    """Stands in for agent_engines.create: records the call, does the SDK's local part.

    Like the SDK it pickles the app with cloudpickle and archives
    ``extra_packages`` with their paths as given; the archive is unpacked into
    ``runtime`` the way Agent Engine unpacks it beside the pickle.
    """

    runtime: Path
    app: Any = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    config: tuple[str | None, ...] = ()
    pickle: bytes = b""
    calls: int = 0

    def __call__(self, agent_engine: Any, **kwargs: Any) -> CreatedEngine:
        self.calls += 1
        self.app, self.kwargs = agent_engine, kwargs
        config = initializer.global_config
        self.config = (config.project, config.location, config.staging_bucket)
        self.pickle = cloudpickle.dumps(agent_engine)
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w|gz") as tar:
            for path in kwargs["extra_packages"]:
                tar.add(path)
        archive.seek(0)
        with tarfile.open(fileobj=archive, mode="r:gz") as tar:
            tar.extractall(self.runtime, filter="data")
        return CreatedEngine(ENGINE)


@pytest.fixture
def create(tmp_path, monkeypatch) -> RecordingCreate:
    """agent_engines.create replaced by the recording stand-in."""
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    recorder = RecordingCreate(runtime)
    monkeypatch.setattr(agent_engines, "create", recorder)
    return recorder


@pytest.fixture
def google_cli(capsys):
    """Run `interlock google deploy <argv>` in-process; return (code, out, err)."""

    async def run(*argv: str) -> tuple[int, str, str]:
        code = await amain(["google", "deploy", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


DEPLOY_ARGS = (
    "--display-name",
    "support agent",
    "--project",
    "my-project",
    "--location",
    "us-central1",
    "--router-url",
    "https://router.example.com/",
)


async def test_deploy_creates_the_engine_and_prints_its_name(create, google_cli, tmp_path):
    """The command calls create with the spec's values and prints only the resource name."""
    prompt = tmp_path / "prompt.md"
    prompt.write_text("You help customers of Acme.\n", encoding="utf-8")
    code, out, err = await google_cli(
        *DEPLOY_ARGS, "--instruction-file", str(prompt), "--model", "gemini-3.1-pro"
    )
    assert (code, out) == (0, ENGINE + "\n"), err
    assert isinstance(create.app, agent_engines.AdkApp)
    assert create.config == ("my-project", "us-central1", "gs://my-project-interlock-staging")
    gcs_dir_name = create.kwargs.pop("gcs_dir_name")
    assert gcs_dir_name.startswith("interlock/")
    assert create.kwargs == {
        "requirements": list(deploy.REQUIREMENTS),
        "extra_packages": ["interlock_agent.py"],
        "env_vars": {"INTERLOCK_ROUTER_URL": "https://router.example.com"},
        "display_name": "support agent",
        "description": "Interlock agent (gemini-3.1-pro); its tools are dispatched to "
        "https://router.example.com",
    }
    assert "interlock_agent" not in sys.modules  # the staged module does not outlive the deploy
    assert ENGINE in err  # with how to run on it


async def test_deployed_app_runs_a_turn_in_a_runtime_without_interlock(
    create, google_cli, router, tmp_path
):
    """The pickled app loads with only the shipped file; its dispatch call reaches the router."""
    code, _, err = await google_cli(*DEPLOY_ARGS[:-1], router.url, "--instruction", PROMPT)
    assert code == 0, err
    assert "warning: --router-url is plain http" in err
    assert sorted(p.name for p in create.runtime.iterdir()) == ["interlock_agent.py"]
    assert b"interlock.google" not in create.pickle
    (tmp_path / "engine.pkl").write_bytes(create.pickle)
    script = tmp_path / "runtime_turn.py"
    script.write_text(RUNTIME_TURN, encoding="utf-8")
    env = {**os.environ, **create.kwargs["env_vars"], "PYTHONPATH": str(create.runtime)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(tmp_path / "engine.pkl"),
        TOKEN,
        cwd=create.runtime,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    report = json.loads(stdout.decode().splitlines()[-1])

    assert report["module_file"] == str(create.runtime / "interlock_agent.py")
    assert (report["agent"], report["model"], report["tools"]) == (
        "interlock",
        "gemini-3.1-flash",
        ["dispatch"],
    )
    assert report["system_instruction"].startswith(PROMPT)
    assert TOKEN not in report["system_instruction"]
    [declaration] = report["declarations"]
    assert declaration["name"] == "dispatch"
    description = " ".join(declaration["description"].split())
    assert "must be one of the tools the router offers" in description
    assert "arguments as a JSON object" in description
    schema = declaration["parameters_json_schema"]
    assert schema["required"] == ["tool_name", "arguments"]
    assert schema["properties"]["tool_name"]["type"] == "string"
    assert schema["properties"]["arguments"]["type"] == "object"
    assert "tool_context" not in schema["properties"]

    [request] = router.received
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert json.loads(request.body) == {
        "tool_name": "get_weather",
        "arguments": {"city": "Paris"},
        "call_id": "call-1",
        "user_id": "end-user-hash",
        "session_id": report["session_id"],
    }
    assert report["function_response"] == {"result": {"temp_c": 21}}


# Agent Engine's side, emulated: what the runtime has is the requirements, the
# files of extra_packages (on the path) and the pickle; `interlock` is not there.
# The model is replaced by a script that calls dispatch once, then answers.
RUNTIME_TURN = """
import asyncio, json, sys, warnings

sys.modules["interlock"] = None  # not installed in the runtime
warnings.simplefilter("ignore", DeprecationWarning)

import cloudpickle
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_response import LlmResponse
from google.genai import types

seen = []


class OneDispatchCall(BaseLlm):
    model: str = "scripted"

    async def generate_content_async(self, llm_request, stream=False):
        seen.append(llm_request)
        if len(seen) == 1:
            call = types.FunctionCall(
                id="call-1",
                name="dispatch",
                args={"tool_name": "get_weather", "arguments": {"city": "Paris"}},
            )
            part = types.Part(function_call=call)
        else:
            part = types.Part(text="It is 21 degrees.")
        yield LlmResponse(content=types.Content(role="model", parts=[part]))


async def main():
    with open(sys.argv[1], "rb") as file:
        app = cloudpickle.load(file)
    agent = app._tmpl_attrs["agent"]  # AdkApp has no public handle on it (SDK version pinned)
    report = {
        "module_file": sys.modules["interlock_agent"].__file__,
        "agent": agent.name,
        "model": agent.model,
        "tools": [tool.__name__ for tool in agent.tools],
    }
    agent.model = OneDispatchCall()
    session = await app.async_create_session(user_id="end-user-hash")
    async for _ in app.async_stream_query(
        message="Weather in Paris?",
        user_id="end-user-hash",
        session_id=session["id"],
        state_delta={"interlock_dispatch_token": sys.argv[2]},
    ):
        pass
    first, second = seen
    report["session_id"] = session["id"]
    report["system_instruction"] = str(first.config.system_instruction)
    report["declarations"] = [
        declaration.model_dump(mode="json", exclude_none=True)
        for tool in first.config.tools
        for declaration in tool.function_declarations
    ]
    report["function_response"] = second.contents[-1].parts[0].function_response.response
    print(json.dumps(report))


asyncio.run(main())
"""


async def test_deploy_without_the_extra_says_what_to_install(create, google_cli, monkeypatch):
    """Without Google's SDK: one line naming the extra to install, exit 2, nothing deployed."""
    monkeypatch.setitem(sys.modules, "vertexai", None)
    monkeypatch.setitem(sys.modules, "vertexai.agent_engines", None)
    code, out, err = await google_cli(*DEPLOY_ARGS)
    assert (code, out) == (2, "")
    assert err == (
        "error: interlock google deploy needs the google extra: pip install 'interlock[google]'\n"
    )
    assert create.calls == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--router-url", "router.example.com"), "error: --router-url: must start with https://"),
        (("--location", "global"), "error: --location: Agent Engine runs in a region"),
        (
            ("--instruction-file", "/nonexistent/prompt.md"),
            "error: --instruction-file: cannot read",
        ),
    ],
)
async def test_deploy_refuses_bad_values(create, google_cli, argv, message):
    """A bad value is a usage error (exit 2) naming its option; nothing is deployed."""
    args = list(DEPLOY_ARGS)
    for name, value in zip(argv[::2], argv[1::2], strict=True):
        if name in args:
            args[args.index(name) + 1] = value
        else:
            args += [name, value]
    code, out, err = await google_cli(*args)
    assert (code, out) == (2, "")
    assert err.startswith(message)
    assert create.calls == 0


@pytest.mark.parametrize(
    "argv",
    [
        DEPLOY_ARGS[2:],  # no --display-name
        DEPLOY_ARGS[:-2],  # no --router-url
        (*DEPLOY_ARGS, "--instruction", "a", "--instruction-file", "b"),
    ],
)
async def test_deploy_usage_errors_exit_2(create, google_cli, argv):
    """Missing required options or both prompt sources are argparse usage errors (exit 2)."""
    code, out, err = await google_cli(*argv)
    assert (code, out) == (2, "")
    assert "usage: interlock google deploy" in err
    assert create.calls == 0


async def test_deploy_failure_is_one_error_line(create, google_cli, monkeypatch):
    """Google refusing the deployment is reported in one line with exit 1."""

    def refuse(agent_engine: Any, **kwargs: Any) -> CreatedEngine:
        raise google_exceptions.PermissionDenied("aiplatform.reasoningEngines.create denied")

    monkeypatch.setattr(agent_engines, "create", refuse)
    code, out, err = await google_cli(*DEPLOY_ARGS)
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == (
        "error: deploy failed: 403 aiplatform.reasoningEngines.create denied"
    )


async def test_run_names_the_deployed_engine(fake_daemon, capsys):
    """`interlock run --google-engine/--google-location` set RunRequest.google."""
    code = await amain(
        [
            *("--address", fake_daemon.address, "--api-key", fake_daemon.api_key),
            *("run", "hi", "--provider", "google"),
            *("--google-engine", ENGINE, "--google-location", "europe-west4"),
        ]
    )
    capsys.readouterr()
    assert code == 0
    [request] = fake_daemon.router.requests
    assert request.provider == "google"
    assert request.google.reasoning_engine_id == ENGINE
    assert request.google.location == "europe-west4"
