"""Where a tool call runs: the daemon's tools and everything around executing one.

- :mod:`~interlockd.tools.base` — the :class:`Tool` seam, its context and error, the registry;
- :mod:`~interlockd.tools.selection` — which tools a run gets (built-ins, then sources such
  as the sandbox's integrations, restricted to the request's allow-list);
- :mod:`~interlockd.tools.runner` — the run's runner: record → validate → execute → record,
  a completed call never run twice, a call that may have started reported "outcome unknown";
- :mod:`~interlockd.tools.validation` — arguments checked against a tool's JSON schema;
- :mod:`~interlockd.tools.grants` — run-scoped bearer tokens (one registry for every kind);
- :mod:`~interlockd.tools.dispatch` — hosted agents' tool callbacks, on those grants;
- :mod:`~interlockd.tools.search` — the built-in ``search_conversations`` tool.

Layer 4: imports the ground floor and the store, never runs/, the providers' packages nor
the edges. Schema cleaning per provider dialect is a pure function on the ground floor
(:mod:`interlockd.tool_schema`), because the backends that apply it sit below this package.
"""
