"""Comparing providers through a daemon, as a client sees it: ``python -m benchmarks.compare``.

- :mod:`benchmarks.compare.workload` reads a scripted conversation (a workload file).
- :mod:`benchmarks.compare.compare` runs it on several providers and measures each.
- :mod:`benchmarks.compare.report` renders the result: a table, markdown, JSON.
- :mod:`benchmarks.compare.command` is the command line (``python -m benchmarks.compare``).
- :mod:`benchmarks.compare.fake_provider` and :mod:`benchmarks.compare.loopback` stand
  in for real providers when there are no credentials: a paced OpenAI-compatible
  fake, and a daemon started in front of such fakes.

Run from the repository root, with the Python client installed (``make install``).
Nothing here touches the daemon's internals: every figure comes from what the
API returns (the run's events, the ledger), through :class:`interlock.Client`.
It lives beside the other benchmarks, not in the ``interlock`` package its users
install.
"""
