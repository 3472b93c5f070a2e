"""The daemon's listen addresses: whether one can be bound, and what to say when it cannot.

``serve`` probes both addresses before anything opens, so a taken port ends
the process at once with one line naming the address and the setting that
moves it, instead of a gRPC C-core error, a traceback and a process kept
alive by threads already started. It imports nothing but the settings'
module, so ``cli.py`` runs the probe before the daemon's modules load (a
second or more): a refused port is reported within a second of the start.

A worker process (``serve --workers N``, see ``workers.py``) shares its ports
with its siblings: :func:`share_ports` makes every listener of the process,
and the probe, set SO_REUSEPORT, so the kernel spreads new connections over
the workers. A single process never sets it, so a second daemon on its ports
is refused as before.
"""

from __future__ import annotations

import socket

from interlockd.config import ConfigError

#: How an operator moves each listener.
LISTEN_SETTING = "--listen HOST:PORT (the listen setting)"
HTTP_LISTEN_SETTING = "the http_listen setting (HOST:PORT)"

_shared = False


def share_ports() -> None:
    """From now on this process's listeners share their ports with its sibling workers."""
    global _shared
    _shared = True


def ports_shared() -> bool:
    """Whether this process is a worker whose listeners set SO_REUSEPORT."""
    return _shared


def listen_refused(address: str, exc: OSError | None, setting: str) -> str:
    """The one-line message for an address that cannot be bound."""
    why = (exc.strerror or str(exc)) if exc is not None else "the address cannot be bound"
    return (
        f"cannot listen on {address}: {why}. Another process (another interlockd?) may hold "
        f"it: stop that one, or move this daemon with {setting}"
    )


def check_listen_address(address: str, setting: str) -> None:
    """ConfigError naming ``address`` and ``setting`` unless ``host:port`` can be bound now.

    A probe, closed at once: a socket with SO_REUSEADDR, as the gRPC and
    HTTP servers bind theirs, so a port in TIME_WAIT passes and a listening
    one does not (unless it is a sibling worker's: SO_REUSEPORT then, as the
    listeners). Like gRPC, one bindable resolved address is enough.
    """
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
        found = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (ValueError, OSError) as exc:
        raise ConfigError(f"cannot listen on {address!r} ({exc}): fix {setting}") from None
    refused: OSError | None = None
    for family, kind, proto, _, sockaddr in found:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if _shared:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                refused = exc
                continue
            return
    raise ConfigError(listen_refused(address, refused, setting))
