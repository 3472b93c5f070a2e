"""Provider kinds: the built-in tables, and kinds other packages register as entry points."""

from __future__ import annotations

import asyncio
import os
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from interlock.v1 import router_pb2, router_pb2_grpc
from interlockd.backends.kinds import BUILTIN as BUILTIN_BACKENDS
from interlockd.backends.kinds import load_backend_kinds
from interlockd.compute.kinds import BUILTIN as BUILTIN_COMPUTE
from interlockd.compute.kinds import load_compute_kinds
from interlockd.config import ConfigError, load_settings
from interlockd.plugins import BUILT_IN, PluginError
from tests.daemon.process import DaemonProcess, write_config

#: A third-party package: an agent backend kind that echoes, a compute kind never built.
PLUGIN = '''
"""An outside package's provider kinds."""

from typing import Literal

from interlockd.backends.base import AgentBackend, BackendSettings
from interlockd.backends.registry import BackendKind
from interlockd.compute.base import ComputeKind, ComputeProviderSettings
from interlockd.vocabulary import ModelInfo, TextDelta, TurnEnd


class EchoSettings(BackendSettings):
    """Says the user's message back, after a prefix."""

    kind: Literal["echo"] = "echo"
    prefix: str = ""


class EchoBackend(AgentBackend):
    def __init__(self, provider, prefix):
        self.provider = provider
        self.prefix = prefix

    def model_info(self, model):
        return ModelInfo(context_window=4096, max_output_tokens=256)

    async def stream_turn(self, request, tools):
        yield TextDelta(self.prefix + request.messages[-1].content)
        yield TurnEnd("end_turn")


class ShelfSettings(ComputeProviderSettings):
    """Runtimes on a shelf."""

    kind: Literal["shelf"] = "shelf"


def build_shelf(settings, deps):
    raise NotImplementedError


ECHO = BackendKind(EchoSettings, lambda settings, deps: EchoBackend(deps.name, settings.prefix))
SHELF = ComputeKind(ShelfSettings, build_shelf)
NOT_A_KIND = "echo"
'''


def install_plugin(root: Path, entry_points: str) -> Path:
    """A distribution-less install of the plugin: its module and a .dist-info on ``root``."""
    root.mkdir()
    (root / "interlock_echo.py").write_text(PLUGIN)
    info = root / "interlock_echo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: interlock-echo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    return root


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The plugin installed on sys.path (for this process) and on PYTHONPATH (children)."""
    root = install_plugin(
        tmp_path / "site",
        "[interlockd.backends]\necho = interlock_echo:ECHO\n"
        "[interlockd.compute]\nshelf = interlock_echo:SHELF\n",
    )
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    return root


def entry(name: str, value: str, group: str = "interlockd.backends") -> EntryPoint:
    return EntryPoint(name=name, value=value, group=group)


def test_builtin_kinds_come_first_in_their_order() -> None:
    """The built-in kinds are listed in the order configuration errors name them."""
    assert list(load_backend_kinds(found=[])) == [
        "openai",
        "local",
        "anthropic",
        "google",
        "hermes",
    ]
    assert list(load_compute_kinds(found=[])) == ["local", "daytona", "fly_sprites"]
    assert {k.origin for k in (*BUILTIN_BACKENDS, *BUILTIN_COMPUTE)} == {BUILT_IN}


def test_an_installed_entry_point_adds_a_kind_named_after_its_distribution(plugin: Path) -> None:
    """A kind registered in interlockd.backends / interlockd.compute by an installed
    distribution joins the table after the built-in ones, its origin the distribution."""
    backends = load_backend_kinds()
    compute = load_compute_kinds()
    assert list(backends)[-1] == "echo"
    assert (backends["echo"].origin, backends["echo"].summary) == (
        "interlock-echo",
        "Says the user's message back, after a prefix.",
    )
    assert (list(compute)[-1], compute["shelf"].origin) == ("shelf", "interlock-echo")


@pytest.mark.parametrize(
    ("point", "message"),
    [
        (entry("echo", "interlock_missing:ECHO"), "could not be loaded: ModuleNotFoundError"),
        (entry("echo", "interlock_echo:NOT_A_KIND"), "is not a BackendKind"),
        (entry("echo", "interlock_echo:SHELF"), "is not a BackendKind"),
        (entry("parrot", "interlock_echo:ECHO"), "names kind 'echo': register it as 'echo'"),
        (entry("local", "interlock_echo:ECHO"), "names kind 'echo'"),
    ],
)
def test_a_broken_entry_point_fails_naming_it(
    plugin: Path, point: EntryPoint, message: str
) -> None:
    """An entry point that cannot be used fails the load, naming it and why, instead of
    its kind going missing."""
    with pytest.raises(PluginError, match=f"entry point {point.name!r}") as raised:
        load_backend_kinds(found=[point])
    assert message in raised.value.message


def test_a_kind_may_not_take_a_builtin_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin whose kind is named like a built-in one is refused, naming who has it."""
    (tmp_path / "interlock_clash.py").write_text(
        PLUGIN.replace('Literal["echo"] = "echo"', 'Literal["openai"] = "openai"')
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="kind 'openai' is already provided by built-in"):
        load_backend_kinds(found=[entry("openai", "interlock_clash:ECHO")])


def test_a_compute_table_accepts_only_its_kinds_keys() -> None:
    """A compute provider table is read by its kind's model: another kind's key is refused
    naming the kind, and an unknown kind names the kinds there are."""
    env = {"INTERLOCK_COMPUTE__PROVIDERS__D__KIND": "daytona"}
    settings = load_settings(env={**env, "INTERLOCK_COMPUTE__PROVIDERS__D__TARGET": "eu"})
    assert (settings.compute.providers["d"].kind, settings.compute.providers["d"].target) == (
        "daytona",
        "eu",
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(env={**env, "INTERLOCK_COMPUTE__PROVIDERS__D__ROOT": "x"})
    assert str(raised.value) == (
        "invalid configuration: compute.providers.d.root: unknown key "
        "(not a setting of kind 'daytona')"
    )
    with pytest.raises(
        ConfigError, match=r"compute\.providers\.d\.kind: 'k8s' is not one of local"
    ):
        load_settings(env={"INTERLOCK_COMPUTE__PROVIDERS__D__KIND": "k8s"})


async def test_interlockd_providers_lists_builtin_and_plugin_kinds(plugin: Path) -> None:
    """`interlockd providers` lists every kind with where it comes from, plugins included."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "interlockd.cli",
        "providers",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = [line.split(None, 2) for line in out.decode().splitlines() if line.startswith("  ")]
    listed = {(kind, origin) for kind, origin, _ in lines}
    assert {("openai", "built-in"), ("hermes", "built-in"), ("fly_sprites", "built-in")} <= listed
    assert {("echo", "interlock-echo"), ("shelf", "interlock-echo")} <= listed


async def test_the_daemon_runs_a_turn_on_a_plugin_backend(plugin: Path, tmp_path: Path) -> None:
    """A provider table naming a plugin's kind is read by its settings model and built by
    its build: `interlockd serve` runs a turn through it."""
    config = write_config(
        tmp_path / "interlock.toml",
        tmp_path / "data",
        {"parrot": {"kind": "echo", "prefix": "you said: ", "default_model": "e"}},
        default_provider="parrot",
    )
    daemon = DaemonProcess(config)
    try:
        await daemon.start()
        async with daemon.channel() as channel:
            router = router_pb2_grpc.AgentRouterStub(channel)
            request = router_pb2.RunRequest(end_user_id="u", message="hi")
            events = [e async for e in router.Run(request, metadata=daemon.metadata())]
    finally:
        await daemon.kill()
    text = "".join(e.text_delta.text for e in events if e.HasField("text_delta"))
    assert text == "you said: hi"
    assert events[-1].HasField("finish")
