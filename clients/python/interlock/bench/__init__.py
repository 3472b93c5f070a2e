"""Benchmarks run through a daemon, as a client sees it: ``interlock bench ...``.

- :mod:`interlock.bench.workload` reads a scripted conversation (a workload file).
- :mod:`interlock.bench.compare` runs it on several providers and measures each.
- :mod:`interlock.bench.report` renders the result: a table, markdown, JSON.
- :mod:`interlock.bench.command` is the ``interlock bench compare`` command.
- :mod:`interlock.bench.fake_provider` and :mod:`interlock.bench.loopback` stand
  in for real providers when there are no credentials: a paced OpenAI-compatible
  fake, and a daemon started in front of such fakes.

Nothing here touches the daemon's internals: every figure comes from what the
API returns (the run's events, the ledger).
"""
