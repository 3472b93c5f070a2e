"""What a local compute session needs of this host: its files, a port, its process group.

Owns the layout of a session's directory (``state/``, ``state.tar.gz``,
``runtime.log``), writing the spec's files into it, archiving and restoring its
state, finding a free port on 127.0.0.1, signalling a process group and reading
a process's start time. Blocking functions: the provider runs them in a thread
when they touch more than a file or two.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tarfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from interlockd.compute import remote
from interlockd.compute.base import ComputeError

PROVIDER = "local"
#: The address runtimes bind: only this host reaches them.
HOST = "127.0.0.1"
#: A session directory's runtime state, its archive and its output log.
STATE = "state"
ARCHIVE = "state.tar.gz"
LOG = "runtime.log"
#: How much of the end of a runtime's log is read for an error (the same as hosted ones).
_TAIL_BYTES = 4096


def fill(value: str, port: int, state: Path) -> str:
    return (
        value.replace("{port}", str(port))
        .replace("{host}", HOST)
        .replace("{state_dir}", str(state))
    )


def file_path(state: Path, relative: str) -> Path:
    parts = PurePosixPath(relative).parts
    if not parts or parts[0] == "/" or ".." in parts:
        raise ComputeError(PROVIDER, f"file {relative!r}: give a relative path inside the session")
    return state.joinpath(*parts)


def create_dirs(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    (directory / STATE).mkdir(mode=0o700, exist_ok=True)


def write_files(state: Path, files: Mapping[str, bytes]) -> None:
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    for relative, content in files.items():
        path = file_path(state, relative)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(content)


def open_log(path: Path) -> int:
    """A fresh log for this start; the previous start's is kept beside it."""
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, path.with_name(path.name + ".1"))
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


def settle(directory: Path, status: str) -> None:
    """Finish what an interrupted archive or restore left half done.

    The record's status is the commit point: once it says ``archived`` the
    archive is the state; before that (or after a restore) the directory is.
    """
    if status == "archived":
        shutil.rmtree(directory / STATE, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(directory / ARCHIVE)
    with contextlib.suppress(FileNotFoundError):
        os.remove(directory / f"{ARCHIVE}.partial")
    shutil.rmtree(directory / f"{STATE}.partial", ignore_errors=True)


def pack(directory: Path) -> int:
    partial = directory / f"{ARCHIVE}.partial"
    (directory / STATE).mkdir(mode=0o700, exist_ok=True)
    with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
        tar.add(directory / STATE, arcname=STATE)
    os.chmod(partial, 0o600)
    os.replace(partial, directory / ARCHIVE)
    return (directory / ARCHIVE).stat().st_size


def unpack(directory: Path) -> None:
    partial = directory / f"{STATE}.partial"
    try:
        with tarfile.open(directory / ARCHIVE, "r:gz") as tar:
            # "data": nothing outside the target, no devices, no setuid bits.
            tar.extractall(partial, filter="data")
    except (OSError, tarfile.TarError) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise ComputeError(
            PROVIDER, f"session {directory.name}: its archive cannot be restored ({exc})"
        ) from None
    os.replace(partial / STATE, directory / STATE)
    os.rmdir(partial)


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing listens on now; the runtime binds it a moment later.

    A runtime cannot be handed an open socket, so another process could take the
    port in between: the runtime then fails to start and the error says so."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
    return port


def signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def process_started(pid: int) -> str:
    """The start time of ``pid`` (clock ticks since boot, from /proc); "" if it is gone,
    a zombie, or unknown (no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    # After "pid (comm)": state is field 3 of stat(5), starttime field 22.
    if len(fields) <= 19 or fields[0] in ("Z", "X"):
        return ""
    return fields[19]


def log_tail(path: Path) -> str:
    """The end of a runtime's output log, for an operator reading the error."""
    try:
        with open(path, "rb") as log_file:
            log_file.seek(0, os.SEEK_END)
            log_file.seek(max(0, log_file.tell() - _TAIL_BYTES))
            text = log_file.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return remote.output_tail(text)
