"""deploy/Dockerfile, checked without Docker: what it copies is there and is sent, what it
runs is installed, what it pins agrees with pyproject.toml, and its environment is a
configuration the daemon accepts, listening where the image says it does."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from interlockd.cli import _parser
from interlockd.config import load_settings
from tests.deploy.files import (
    DEPLOY,
    ROOT,
    copy_sources,
    dockerfile,
    final_stage,
    image_env,
    port_of,
)

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: The extras a deployment's image may install: not the laptop's model, nor tooling.
IMAGE_EXTRAS = ("anthropic", "google", "uvloop", "daytona", "sprites")


def _constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (DEPLOY / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not name==version"
            pins[canonicalize_name(name)] = version
    return pins


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore-style ``patterns`` leave ``path`` out (the last match decides,
    and a pattern matching a directory matches everything under it)."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw[1:] if negated else raw
        if pattern.startswith("**/"):
            tail = pattern[3:]
            hit = any(fnmatch.fnmatchcase(part, tail) for part in parts)
        else:
            hit = any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes)
        if hit:
            ignored = not negated
    return ignored


def test_every_copy_source_exists_and_is_sent_in_the_build_context() -> None:
    """Each file or folder a COPY takes from the context exists in the tree and is let
    through by deploy/Dockerfile.dockerignore (which ignores everything else)."""
    patterns = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    sources = copy_sources(dockerfile())
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the tree"
        assert not _ignored(source, patterns), f"COPY {source}: the .dockerignore leaves it out"
    # The wheel build reads these beside the sources (pyproject's readme, the client's tree).
    assert not _ignored("README.md", patterns)
    assert not _ignored("server/interlockd/store/migrations/postgres/0001_initial.sql", patterns)
    assert _ignored(".venv/bin/python", patterns)
    assert _ignored("server/interlockd/__pycache__/cli.cpython-311.pyc", patterns)


def test_the_entrypoint_is_the_daemons_console_script_and_the_command_a_subcommand() -> None:
    """ENTRYPOINT runs the `interlockd` console script pyproject.toml declares, and CMD is
    a command line its parser accepts (`serve`)."""
    stage = final_stage(dockerfile())
    entrypoint = next(ins for ins in stage if ins.keyword == "ENTRYPOINT").exec_form()
    command = next(ins for ins in stage if ins.keyword == "CMD").exec_form()
    scripts = PYPROJECT["project"]["scripts"]
    assert entrypoint == ["interlockd"]
    assert scripts["interlockd"] == "interlockd.cli:main"
    assert command == ["serve"]
    assert _parser().parse_args(command).command == "serve"


def test_the_image_runs_as_an_unprivileged_user_on_python_3_11() -> None:
    """Both stages start from a python:3.11 slim image (the daemon's requires-python), and the
    final one runs as a numeric non-root user that owns data_dir."""
    instructions = dockerfile()
    args = {
        ins.rest.split("=", 1)[0]: ins.rest.split("=", 1)[1]
        for ins in instructions
        if ins.keyword == "ARG" and "=" in ins.rest
    }
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-bookworm(@sha256:[0-9a-f]{64})?", base)
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    assert [ins.rest.split()[0] for ins in instructions if ins.keyword == "FROM"] == [
        "${PYTHON_IMAGE}",
        "${PYTHON_IMAGE}",
    ]
    stage = final_stage(instructions)
    user = next(ins for ins in stage if ins.keyword == "USER").rest
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), user
    assert gid.isdigit(), user
    assert int(uid) != 0, user
    assert int(gid) != 0, user
    run = " ".join(ins.rest for ins in stage if ins.keyword == "RUN")
    data_dir = image_env()["INTERLOCK_DATA_DIR"]
    assert f"--uid {uid}" in run
    assert f"install -d -o interlock -g interlock -m 0700 {data_dir}" in run


def test_the_image_environment_is_a_configuration_listening_on_the_exposed_ports() -> None:
    """The image's INTERLOCK_* variables load as daemon settings: gRPC and HTTP on every
    interface at the EXPOSEd ports, data_dir the working directory."""
    stage = final_stage(dockerfile())
    env = image_env()
    settings = load_settings(None, env=env)
    exposed = [int(port) for ins in stage if ins.keyword == "EXPOSE" for port in ins.rest.split()]
    assert settings.listen == f"0.0.0.0:{exposed[0]}"
    assert settings.http_listen == f"0.0.0.0:{exposed[1]}"
    assert (port_of(settings.listen), port_of(settings.http_listen)) == (7600, 7601)
    workdir = next(ins for ins in stage if ins.keyword == "WORKDIR").rest
    assert settings.data_dir == Path(workdir)


def test_the_constraints_pin_every_dependency_as_pyproject_does() -> None:
    """deploy/constraints.txt pins each of the daemon's dependencies, and of the extras an
    image may install, at pyproject.toml's version, and satisfies the client's ranges: a pin
    bumped in one place and not the other fails here."""
    pins = _constraints()
    project = PYPROJECT["project"]
    wanted = list(project["dependencies"])
    for extra in IMAGE_EXTRAS:
        wanted += project["optional-dependencies"][extra]
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name == "interlock":
            continue  # built from clients/python in the image
        assert name in pins, f"constraints.txt lacks {requirement.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {requirement.name}=={pins[name]}, pyproject says {text}"
        )
    client = tomllib.loads((ROOT / "clients/python/pyproject.toml").read_text())
    for text in client["project"]["dependencies"]:
        requirement = Requirement(text)
        assert requirement.specifier.contains(pins[canonicalize_name(requirement.name)])
    assert "interlock" not in pins
    assert "interlockd" not in pins


def test_the_image_installs_extras_that_exist_and_the_constraints_cover() -> None:
    """The EXTRAS build argument names extras of pyproject.toml that the constraints were
    resolved for, the same default in both stages."""
    defaults = [
        ins.rest.split("=", 1)[1]
        for ins in dockerfile()
        if ins.keyword == "ARG" and ins.rest.startswith("EXTRAS=")
    ]
    assert len(defaults) == 2
    assert len(set(defaults)) == 1
    extras = defaults[0].split(",")
    assert set(extras) <= set(IMAGE_EXTRAS)
    assert set(IMAGE_EXTRAS) <= set(PYPROJECT["project"]["optional-dependencies"])
    header = (DEPLOY / "constraints.txt").read_text()
    assert f"'.[{','.join(IMAGE_EXTRAS)}]'" in header
