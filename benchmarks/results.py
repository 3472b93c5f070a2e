"""Results directories: where a harness run for real leaves its report, raw figures and plots.

Every harness writes, unless told ``--no-results``, one directory per run:

    benchmarks/results/<YYYY-MM-DD>-<name>/     (-2, -3, ... when it exists; UTC date)
        report.md       the machine, the versions, the git commit and whether the
                        tree was dirty, the exact command line, the config (JSON),
                        the harness's tables and the plots inline
        results.json    everything the harness measured (its ``--json`` output)
        *.png           the plots (matplotlib, Agg backend)

``--results DIR`` writes into DIR instead; ``--smoke`` runs write into a fresh
temporary directory (its path is printed), so CI exercises the plotting
without leaving anything in the repository. This module owns the layout, the
run's metadata (``machine_info``) and the plotting setup; the plots themselves
belong to each harness. It never measures anything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
MB = 1_000_000
MIB = 1 << 20


# --- the run's metadata ------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    return done.stdout.rstrip() if done.returncode == 0 else ""


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _memory_mib() -> float:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    return math.nan


def command_line() -> str:
    """The command as typed from the repository root: ``.venv/bin/python benchmarks/x.py ...``."""
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    return shlex.join([str(python), *sys.argv])


def machine_info() -> dict[str, Any]:
    """The machine, the versions and the source tree a run measured, and its command."""
    # Tracked files only: a results directory or scratch file doesn't make the code dirty.
    changed = _git("status", "--porcelain", "--untracked-files=no").splitlines()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "memory_mib": round(_memory_mib()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "grpcio": _version("grpcio"),
        "protobuf": _version("protobuf"),
        "git": _git("describe", "--always", "--dirty"),
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(changed),
        "dirty_paths": [line[3:] for line in changed[:20]],
        "command": command_line(),
    }


# --- the directory -----------------------------------------------------------------


def add_options(parser: argparse.ArgumentParser) -> None:
    """``--results DIR`` and ``--no-results``, the same for every harness."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--results",
        type=Path,
        metavar="DIR",
        help="write the report and plots here (default: benchmarks/results/<date>-<name>/; "
        "a temporary directory with --smoke)",
    )
    group.add_argument(
        "--no-results", action="store_true", help="write no results directory, only stdout"
    )


def directory(name: str, args: argparse.Namespace) -> Path | None:
    """The directory this run writes into (created), or None with ``--no-results``."""
    if getattr(args, "no_results", False):
        return None
    chosen: Path | None = getattr(args, "results", None)
    if chosen is not None:
        chosen.mkdir(parents=True, exist_ok=True)
        return chosen
    if getattr(args, "smoke", False):
        return Path(tempfile.mkdtemp(prefix=f"interlock-{name}-smoke-"))
    stem = f"{datetime.now(UTC):%Y-%m-%d}-{name}"
    for n in range(1, 1000):
        path = RESULTS / (stem if n == 1 else f"{stem}-{n}")
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{RESULTS / stem}: 999 runs on one day")


# --- the report --------------------------------------------------------------------


def md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [row(headers), row(["---"] * len(headers)), *(row(r) for r in rows)]
    return "\n".join(lines) + "\n"


def text_block(text: str) -> str:
    """Fixed-width text (a harness's stdout tables) as a markdown code block."""
    return f"```text\n{text.rstrip()}\n```\n"


def header_md(machine: dict[str, Any], config: dict[str, Any], extra: dict[str, str]) -> str:
    """The run's metadata as markdown: what a reader needs to repeat or discount it."""
    m = machine
    dirty = "**dirty**: " + ", ".join(m["dirty_paths"]) if m.get("dirty") else "clean"
    memory = m.get("memory_mib")
    versions = [f"python {m['python']}", f"grpcio {m['grpcio']}", f"protobuf {m['protobuf']}"]
    versions += [f"{k} {v}" for k, v in extra.items()]
    lines = [
        f"- date: {m['date']}",
        f"- command: `{m['command']}`",
        f"- commit: `{m.get('commit') or m['git']}` (`{m['git']}`), tree {dirty}",
        f"- machine: nproc {m['nproc']} (cpu_count {m['cpu_count']}), {m['cpu_model']}, "
        f"kernel {m.get('kernel', '-')}, "
        + (f"{memory / 1024:.1f} GiB memory" if isinstance(memory, int | float) else "")
        + f" ({m['platform']})",
        f"- versions: {', '.join(versions)}",
        "",
        "Config:",
        "",
        "```json",
        compact_json(config),
        "```",
        "",
    ]
    return "\n".join(lines)


def compact_json(config: dict[str, Any]) -> str:
    """One key per line, each value on one line."""
    items = [f"  {json.dumps(k)}: {json.dumps(v, default=str)}" for k, v in config.items()]
    return "{\n" + ",\n".join(items) + "\n}"


def without_nan(value: Any) -> Any:
    """``value`` with NaN floats as None, for strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_nan(v) for v in value]
    return value


def publish(
    out: Path,
    title: str,
    report: dict[str, Any],
    body: str,
    plots: Callable[[Path], list[Path]] | None = None,
    extra_versions: dict[str, str] | None = None,
) -> Path:
    """Write report.md, results.json and the plots into ``out``; return report.md.

    A plot that fails is named in the report instead: the figures are worth
    more than the pictures of them.
    """
    (out / "results.json").write_text(
        json.dumps(without_nan(report), indent=2, allow_nan=False, default=str) + "\n"
    )
    images: list[Path] = []
    notes: list[str] = []
    if plots is not None:
        try:
            images = plots(out)
        except ImportError as exc:
            notes.append(f"No plots: {exc} (`make` installs the `bench` extra).")
        except Exception as exc:  # a broken plot must not lose the measurements
            notes.append(f"Plotting failed: {type(exc).__name__}: {exc}")
    config = report.get("config", {})
    text = [f"# {title}", "", header_md(report["machine"], config, extra_versions or {}), body]
    if images or notes:
        text += ["", "## Plots", ""]
        text += [f"![{p.stem}]({p.name})\n" for p in images]
        text += notes
    path = out / "report.md"
    path.write_text("\n".join(text).rstrip() + "\n")
    print(f"results: {out}", file=sys.stderr, flush=True)
    for note in notes:
        print(f"results: {note}", file=sys.stderr, flush=True)
    return path


# --- plots -------------------------------------------------------------------------


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display; PNG files only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure(ncols: int = 1, nrows: int = 1, width: float = 6.0, height: float = 4.0) -> Any:
    """A figure and its axes (a list, row by row), sized per panel."""
    plt = pyplot()
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, layout="constrained"
    )
    return fig, [ax for row in axes for ax in row]


def concurrency_axis(ax: Axes, values: Sequence[int]) -> None:
    """A log x axis of concurrent streams, ticked at the values measured."""
    ticks = sorted(set(values))
    if len(ticks) > 1 and ticks[-1] / ticks[0] >= 10:
        ax.set_xscale("log")
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{v:,}" for v in ticks])
    ax.minorticks_off()
    ax.set_xlabel("concurrent streams (C)")
    ax.grid(True, alpha=0.3)


def save(fig: Figure, out: Path, name: str, title: str = "") -> Path:
    if title:
        fig.suptitle(title)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def finite(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(v)]


def cdf(ax: Axes, values: Sequence[float], label: str, **style: Any) -> None:
    """An empirical CDF of ``values`` (nothing for none)."""
    ordered = sorted(values)
    if not ordered:
        return
    ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
    ax.step(ordered, ys, where="post", label=label, **style)


def plain_numbers(ax: Axes) -> None:
    """The y axis labelled 0.5, 2, 4 rather than in powers of ten (on a log scale too)."""
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _pos: f"{v:g}")
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(fmt)
