"""``interlockd``: serve, set up, rotate keys.

    interlockd serve [--config FILE] [--bootstrap] [--listen HOST:PORT] [--workers N]
    interlockd setup [--config FILE]          create the master key, operator key, first sandbox
    interlockd keys rotate [--config FILE]    new master key; rewrap data keys; new data keys
    interlockd providers                      the provider kinds a configuration may name

Secrets created by ``setup``/``--bootstrap`` are printed once, to stdout, and
stored only as hashes (API keys) or in the 0600 key file (the master key).

``serve`` writes its logs to stderr, every line structured (see ``logs.py``),
including the one line saying why it could not start; stdout holds only the
start banner (the secrets above and the ``interlockd listening on`` line
scripts wait for).

``serve --workers N`` (N > 1) runs a supervisor that starts N worker processes
on the shared ports (``workers.py``); with one worker there is no supervisor.
"""

from __future__ import annotations

import os

# gRPC's C core reads these once, when grpc is first imported (below, through
# the daemon's modules). Its own lines are absl-format text, not the JSON log:
# keep it to errors and never let an inherited GRPC_TRACE turn tracing on.
os.environ["GRPC_VERBOSITY"] = "ERROR"
os.environ.pop("GRPC_TRACE", None)

import argparse
import asyncio
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interlockd import logs
from interlockd.config import ConfigError, Settings, load_settings
from interlockd.errors import FailedPrecondition, InterlockError
from interlockd.listen import (
    HTTP_LISTEN_SETTING,
    LISTEN_SETTING,
    check_listen_address,
    ports_shared,
)

if TYPE_CHECKING:
    from interlockd.daemon import BootstrapCredentials


def client_command() -> str:
    """How to run the ``interlock`` client from here: the script installed beside this
    interpreter (``make`` installs both into .venv/bin, which is not on PATH), relative
    to the working directory when inside it; plain ``interlock`` when there is none."""
    script = Path(sys.executable).parent / "interlock"
    if not script.is_file():
        return "interlock"
    try:
        shown = str(script.relative_to(Path.cwd()))
    except ValueError:
        shown = str(script)
    return shlex.quote(shown)


def _print_credentials(creds: BootstrapCredentials, port: int | None = None) -> None:
    if not (creds.operator_key or creds.api_key):
        return
    lines = ["", "Interlock is set up. These secrets are shown only now; keep them safe:"]
    if creds.operator_key:
        lines.append(f"  export INTERLOCK_OPERATOR_KEY={creds.operator_key}")
    if creds.api_key:
        lines.append(f"  export INTERLOCK_API_KEY={creds.api_key}   # sandbox {creds.sandbox_id}")
    if port is not None:
        lines.append(f"  export INTERLOCK_ADDRESS=127.0.0.1:{port}")
    lines += [f'Then: {client_command()} run "Hello!"', ""]
    print("\n".join(lines), flush=True)


async def _serve(settings: Settings, do_bootstrap: bool) -> int:
    from interlockd.daemon import Daemon, bootstrap

    # A worker leaves runs left running to the leases: its siblings' runs are running too.
    daemon = Daemon(settings, sweep_at_start=not ports_shared())
    port = await daemon.start()
    if do_bootstrap:
        _print_credentials(await bootstrap(daemon.store), port)
    address = f"{settings.listen.rsplit(':', 1)[0]}:{port}"
    await daemon.serve_until_signalled(
        ready=lambda: print(f"interlockd listening on {address}", flush=True)
    )
    return 0


async def _supervise(settings: Settings, args: argparse.Namespace) -> int:
    from interlockd.workers import Supervisor

    supervisor = Supervisor(settings, config=args.config, data_dir=args.data_dir)
    creds = await supervisor.prepare(args.bootstrap)

    def ready() -> None:
        if creds is not None:
            _print_credentials(creds, supervisor.port)
        print(f"interlockd listening on {supervisor.address}", flush=True)

    return await supervisor.run(ready)


async def _setup(settings: Settings) -> int:
    from interlockd.daemon import bootstrap
    from interlockd.storage import open_store

    store = open_store(settings)
    await store.open()
    try:
        creds = await bootstrap(store)
    finally:
        await store.close()
    if not (creds.operator_key or creds.api_key):
        print("already set up: an operator key and a sandbox exist", flush=True)
    _print_credentials(creds)
    return 0


async def _rotate(settings: Settings) -> int:
    if settings.keys.master_key is not None:
        raise ConfigError("the master key comes from configuration; rotate it at its source")
    if settings.store_url is not None:
        raise ConfigError(
            "keys rotate works on the embedded SQLite store; a PostgreSQL store's replicas "
            "share one master key that must change everywhere at once, which it cannot do yet"
        )
    from interlockd.storage import open_keyring, open_store

    path = settings.resolve(settings.keys.master_key_file)
    keyring = open_keyring(settings)
    keyring.rotate(path)
    store = open_store(settings)
    await store.open()
    try:
        report = await store.rotate_keys(new_data_keys=True)
    finally:
        await store.close()
    print(
        f"master key is now {report.master_key_id}; rewrapped {report.data_keys_rewrapped} "
        f"data keys; {report.sandboxes_with_new_data_key} sandboxes got a new data key",
        flush=True,
    )
    return 0


def _providers() -> int:
    """Print the agent backend and compute kinds, built-in and registered by plugins."""
    from interlockd.backends.kinds import GROUP as BACKENDS_GROUP
    from interlockd.backends.kinds import backend_kinds
    from interlockd.compute.kinds import GROUP as COMPUTE_GROUP
    from interlockd.compute.kinds import compute_kinds
    from interlockd.plugins import ProviderKind

    sections: list[tuple[str, str, str, Mapping[str, ProviderKind[Any, Any, Any]]]] = [
        ("agent backends", "providers.<name>.kind", BACKENDS_GROUP, backend_kinds()),
        ("compute", "compute.providers.<name>.kind", COMPUTE_GROUP, compute_kinds()),
    ]
    lines = []
    for title, key, group, kinds in sections:
        lines.append(f"{title} ({key}; plugins: entry points {group!r}):")
        width = max(len(name) for name in kinds)
        origin_width = max(len(kind.origin) for kind in kinds.values())
        for name, kind in kinds.items():
            lines.append(f"  {name:<{width}}  {kind.origin:<{origin_width}}  {kind.summary}")
    print("\n".join(lines), flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interlockd", description="Interlock agent router daemon")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", type=Path, help="TOML settings file")
    serve.add_argument("--listen", help="host:port to listen on (overrides settings)")
    serve.add_argument("--data-dir", type=Path, help="data directory (overrides settings)")
    serve.add_argument(
        "--bootstrap",
        action="store_true",
        help="on an empty store, create an operator key and a first sandbox and print them once",
    )
    serve.add_argument(
        "--workers",
        type=int,
        help="processes serving on the shared ports (overrides the workers setting; default 1)",
    )
    # A supervisor's child: worker I of ``--workers N`` (see workers.py).
    serve.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    setup = sub.add_parser("setup", help="create the master key, operator key and first sandbox")
    setup.add_argument("--config", type=Path)
    setup.add_argument("--data-dir", type=Path)
    keys = sub.add_parser("keys", help="key management")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    rotate = keys_sub.add_parser("rotate", help="rotate the master key and the data keys")
    rotate.add_argument("--config", type=Path)
    rotate.add_argument("--data-dir", type=Path)
    sub.add_parser(
        "providers", help="list the provider kinds (built-in and from installed plugins)"
    )
    return parser


def _loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``serve`` runs on (settings.event_loop)."""
    if settings.event_loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        raise FailedPrecondition(
            "event_loop = \"uvloop\" needs uvloop: pip install 'interlockd[uvloop]'"
        ) from None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "providers":
        # No settings needed: it says what a configuration may name.
        try:
            return _providers()
        except InterlockError as exc:
            print(f"interlockd: {exc}", file=sys.stderr)
            return 1
    overrides: dict[str, object] = {}
    if getattr(args, "listen", None):
        overrides["listen"] = args.listen
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = str(args.data_dir)
    if getattr(args, "workers", None) is not None:
        overrides["workers"] = args.workers
    try:
        settings = load_settings(args.config, overrides=overrides)
        logs.configure(settings.log_level, settings.log_format)
        if args.command == "serve":
            if args.worker is not None:
                from interlockd.workers import become_worker

                become_worker(args.worker)
            # Before the daemon's modules load (seconds): a taken port fails at once.
            check_listen_address(settings.listen, LISTEN_SETTING)
            check_listen_address(settings.http_listen, HTTP_LISTEN_SETTING)
            if settings.workers > 1 and args.worker is None:
                return asyncio.run(_supervise(settings, args))
            with asyncio.Runner(loop_factory=_loop_factory(settings)) as runner:
                return runner.run(_serve(settings, args.bootstrap))
        if args.command == "setup":
            return asyncio.run(_setup(settings))
        return asyncio.run(_rotate(settings))
    except (InterlockError, OSError) as exc:
        if args.command == "serve":
            logs.fatal(str(exc))  # the daemon's stderr is its log: one structured line
        else:
            print(f"interlockd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
