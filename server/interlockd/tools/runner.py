"""A run's tool runner: record → validate → execute → record, for every provider.

Every tool call of a run, whichever provider asked for it and however it
arrived (a chat loop, a hosted agent's dispatch callback, the MCP endpoint),
executes through the run's :class:`SandboxToolRunner`. The call is written
*before* it executes and its result *before* it is handed back, so a crash
never loses a completed result and never leads to executing a completed call
again; a side-effecting call that may have started and never finished is
reported "outcome unknown", never run twice. Arguments are checked against
the tool's schema first (:mod:`interlockd.tools.validation`).

Where the entries go is the run's business: the runner writes through a
:class:`CallRecorder` (the turn's recorder in ``runs/`` implements it), so this
package never imports the turn.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
from typing import Any

import orjson
import structlog

from interlockd.store.base import WindowEntry
from interlockd.tools.base import Tool, ToolContext, ToolError
from interlockd.tools.validation import ArgumentValidator
from interlockd.vocabulary import ToolCall, ToolResult, ToolRunner

log = structlog.get_logger(__name__)

#: Longest tool result fed back to a model (characters of JSON). Bounds how
#: much one tool call can grow the context within a turn.
MAX_RESULT_CHARS = 32_000
_OUTCOME_UNKNOWN = (
    "this call was started before and did not finish; it may have taken effect. It was not "
    "run again: check its effect before retrying"
)


class CallRecorder(abc.ABC):
    """Where a run's tool calls and results are written, durably, in order."""

    @abc.abstractmethod
    async def record_tool_call(self, call: ToolCall) -> None:
        """Write ``call`` (and whatever the turn produced before it) before it executes."""

    @abc.abstractmethod
    async def record_tool_result(self, result: ToolResult, *, source_id: str = "") -> None:
        """Write ``result`` before it is handed back; ``source_id``: the tool's integration."""


class SandboxToolRunner(ToolRunner):
    """Executes a run's tool calls with the sandbox's tools, recording each.

    Every call goes through :meth:`announce` first (the orchestrator calls it
    when the backend yields the ToolCall, before the client sees it; :meth:`run`
    calls it for a backend that never yields one). It decides once per call id
    whether the call executes and records the call before anything else
    happens, so the stream never shows a call the record does not hold:

    - a call id that already has a result (the provider re-sent it) gets that
      result back, recorded nothing new;
    - a side-effecting call that may have started before — its call id was
      recorded without a result, or the same tool with the same arguments was
      left without a result by an earlier attempt of this run — is never
      executed again: its result is "outcome unknown";
    - arguments that are not a JSON object matching the tool's schema, or an
      unknown tool, get a tool error the model can correct, without executing;
    - anything else executes, and its result is recorded before it is returned.
    """

    def __init__(
        self, tools: list[Tool], ctx: ToolContext, recorder: CallRecorder, timeout: float
    ) -> None:
        self._tools = {t.spec.name: t for t in tools}
        self._ctx = ctx
        self._recorder = recorder
        self._timeout = timeout
        self._validators: dict[str, ArgumentValidator | str] = {}
        #: Decisions by call id: None executes, a result is returned as is.
        self._decided: dict[str, tuple[ToolResult | None, dict[str, Any]]] = {}
        #: Side-effecting calls of this run left without a result by an earlier
        #: attempt, by (tool, canonical arguments).
        self._unresolved: set[tuple[str, str]] = set()

    def resume(self, entries: list[WindowEntry]) -> list[ToolResult]:
        """Take in the entries an earlier attempt of this run recorded; return the
        "outcome unknown" results owed to its calls that never got one (the caller
        records and streams them)."""
        results = {e.tool_call_id for e in entries if e.kind == "tool_result"}
        owed = []
        for e in entries:
            if e.kind != "tool_call" or e.tool_call_id in results:
                continue
            tool = self._tools.get(e.tool_name)
            if tool is None or tool.spec.side_effecting:
                self._unresolved.add((e.tool_name, _canonical(e.text)))
            owed.append(ToolResult(e.tool_call_id, e.tool_name, "", error=_OUTCOME_UNKNOWN))
        return owed

    async def announce(self, call: ToolCall) -> None:
        """Decide ``call``'s fate and record it, before the client is shown the call."""
        if call.call_id in self._decided:
            return
        self._decided[call.call_id] = await self._decide(call)

    async def run(self, call: ToolCall) -> ToolResult:
        await self.announce(call)
        decided, arguments = self._decided.pop(call.call_id)
        if decided is not None:
            return decided
        tool = self._tools[call.name]
        result = await self._execute(tool, call, arguments)
        await self._recorder.record_tool_result(result, source_id=tool.source_id)
        return result

    async def _decide(self, call: ToolCall) -> tuple[ToolResult | None, dict[str, Any]]:
        store, sandbox_id, conversation_id = (
            self._ctx.store,
            self._ctx.sandbox_id,
            self._ctx.conversation_id,
        )
        stored = await store.find_tool_result(sandbox_id, conversation_id, call.call_id)
        if stored is not None:
            # The provider re-sent a call that already completed: never run it twice.
            return stored_result(stored, call.name, reused=True), {}
        tool = self._tools.get(call.name)
        source_id = tool.source_id if tool is not None else ""
        if tool is None or tool.spec.side_effecting:
            key = (call.name, _canonical(call.arguments))
            started = await store.find_tool_call(sandbox_id, conversation_id, call.call_id)
            if started is not None or key in self._unresolved:
                # Started before (a crash or a cut stream in between) and never
                # finished: it may have taken effect. Say so; never run it again.
                unknown = ToolResult(call.call_id, call.name, "", error=_OUTCOME_UNKNOWN)
                if started is None:
                    await self._recorder.record_tool_call(call)
                await self._recorder.record_tool_result(unknown, source_id=source_id)
                return dataclasses.replace(unknown, reused=True), {}
        await self._recorder.record_tool_call(call)
        arguments, problem = self._check(tool, call)
        if problem is not None:
            failed = ToolResult(call.call_id, call.name, "", error=problem)
            await self._recorder.record_tool_result(failed, source_id=source_id)
            return failed, {}
        return None, arguments

    def _check(self, tool: Tool | None, call: ToolCall) -> tuple[dict[str, Any], str | None]:
        """The call's decoded arguments, or why they cannot run (for the model to correct)."""
        if tool is None:
            available = ", ".join(sorted(self._tools)) or "none"
            return {}, f"unknown tool {call.name!r}; available: {available}"
        try:
            arguments = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError:
            return {}, "arguments are not valid JSON; send a JSON object"
        if not isinstance(arguments, dict):
            return {}, "arguments must be a JSON object"
        validator = self._validators.get(call.name)
        if validator is None:
            # Compiled on a tool's first call in the run: most runs call few tools.
            try:
                validator = ArgumentValidator(tool.spec.parameters)
            except ValueError as exc:
                validator = f"the tool cannot be called: its parameter schema is {exc}"
            self._validators[call.name] = validator
        if isinstance(validator, str):
            return {}, validator
        return arguments, validator.problem(arguments)

    async def _execute(self, tool: Tool, call: ToolCall, arguments: dict[str, Any]) -> ToolResult:
        def failed(message: str) -> ToolResult:
            return ToolResult(call.call_id, call.name, "", error=message)

        try:
            async with asyncio.timeout(self._timeout):
                value = await tool.execute(self._ctx, arguments)
        except ToolError as exc:
            return failed(str(exc))
        except TimeoutError:
            return failed(f"the tool did not finish within {self._timeout:g} s")
        except Exception:
            log.exception("tool_failed", tool=call.name, run_id=self._ctx.run_id)
            return failed("the tool failed unexpectedly; try again or continue without it")
        text = orjson.dumps(value).decode()
        if len(text) > MAX_RESULT_CHARS:
            text = orjson.dumps(
                {"truncated": True, "partial_json": text[:MAX_RESULT_CHARS]}
            ).decode()
        return ToolResult(call.call_id, call.name, text)


def _canonical(arguments: str) -> str:
    """Arguments as one canonical JSON text (key order and spacing don't make a call new)."""
    try:
        return orjson.dumps(orjson.loads(arguments or "{}"), option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONDecodeError:
        return arguments


def stored_result(entry: WindowEntry, name: str, *, reused: bool = False) -> ToolResult:
    """The ToolResult a recorded ``tool_result`` entry holds (errors are stored as
    ``{"error": message}``, as the recorder writes them)."""
    if entry.is_error:
        error = str(orjson.loads(entry.text).get("error", "the tool failed"))
        return ToolResult(entry.tool_call_id, name, "", error=error, reused=reused)
    return ToolResult(entry.tool_call_id, name, entry.text, reused=reused)
