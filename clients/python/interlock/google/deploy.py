"""Deploying the dispatch agent to Vertex AI Agent Engine.

What gets deployed is decided by pure functions over the command-line values
(:func:`build_spec` validates them into a :class:`DeploySpec`, which says the
environment, the requirements, the staging location and the files to ship);
:func:`deploy` is the one place that talks to Google's SDK, which is imported
only there and only from the ``google`` extra.

The agent's code is :mod:`interlock.google.agent_template`. It is shipped as a
top-level module named :data:`DEPLOYED_MODULE` and imported under that name
before the app is pickled, so the pickle refers to code the runtime unpacks
from ``extra_packages``, not to the ``interlock`` package (not installed there).
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import shutil
import sys
import tempfile
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_INSTRUCTION",
    "DEFAULT_MODEL",
    "DEPLOYED_MODULE",
    "INSTALL_HINT",
    "REQUIREMENTS",
    "DeployConfigError",
    "DeployFailed",
    "DeploySpec",
    "MissingExtra",
    "build_spec",
    "default_staging_bucket",
    "deploy",
    "env_vars",
    "load_agent_module",
    "require_extra",
    "validate_router_url",
]

INSTALL_HINT = "pip install 'interlock[google]'"

# The deployed runtime installs exactly what the `google` extra pins here (the
# tests hold the two lists together): the app is pickled with these versions
# and must be unpickled with them.
REQUIREMENTS = (
    "google-cloud-aiplatform[agent-engines,adk]==2.7.0",
    "google-adk==2.13.0",
    "httpx==0.28.1",
    "cloudpickle==3.1.2",
    "pydantic==2.14.3",
)

DEFAULT_MODEL = "gemini-3.1-flash"
DEFAULT_INSTRUCTION = (
    "You are a helpful assistant. When a request needs one of the tools you have been "
    "offered, call it through the dispatch tool with its exact name and a JSON object "
    "of its arguments."
)

# Also in agent_template.py, which must not import this module.
ROUTER_URL_ENV = "INTERLOCK_ROUTER_URL"
DEPLOYED_MODULE = "interlock_agent"
TEMPLATE = Path(__file__).with_name("agent_template.py")

# Project ids are 6-30 lowercase letters, digits and hyphens, optionally behind
# an organisation's domain ("example.com:my-project").
_PROJECT = re.compile(r"(?:[a-z0-9][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")
_REGION = re.compile(r"[a-z]+(?:-[a-z]+)*[0-9]+")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")
_MAX_DISPLAY_NAME = 128


class DeployConfigError(ValueError):
    """A command-line value that cannot be deployed; names the option at fault."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


class MissingExtra(ImportError):
    """Google's SDK is not installed: the ``google`` extra is needed."""

    def __init__(self) -> None:
        super().__init__(f"interlock google deploy needs the google extra: {INSTALL_HINT}")


class DeployFailed(Exception):
    """Google refused or failed the deployment (credentials, permissions, quota...)."""


@dataclass(frozen=True)
class DeploySpec:
    """Everything one deployment sends to Agent Engine, validated."""

    display_name: str
    project: str
    location: str
    router_url: str
    model: str
    instruction: str
    staging_bucket: str
    # Where this deployment's artifacts go in the bucket: one directory per
    # deployment, so two deployments never overwrite each other's pickle.
    gcs_dir_name: str

    @property
    def requirements(self) -> list[str]:
        """What the runtime pip-installs: the ``google`` extra's pins."""
        return list(REQUIREMENTS)

    @property
    def extra_packages(self) -> list[str]:
        """Files shipped beside the pickle, relative to the staging directory."""
        return [f"{DEPLOYED_MODULE}.py"]

    @property
    def env_vars(self) -> dict[str, str]:
        return env_vars(self.router_url)

    @property
    def description(self) -> str:
        return f"Interlock agent ({self.model}); its tools are dispatched to {self.router_url}"


def validate_router_url(url: str) -> str:
    """The router's public base URL, without a trailing slash.

    It must be http(s) with a host: the deployed agent POSTs tool calls to
    ``{url}/v1/tools/dispatch``. A path prefix (a reverse proxy) is kept.
    """
    option = "--router-url"
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 (parsing the port is what validates it)
    except ValueError as exc:
        raise DeployConfigError(option, f"not a URL: {url!r} ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise DeployConfigError(option, f"must start with https:// (or http://), got {url!r}")
    if not parts.hostname:
        raise DeployConfigError(option, f"has no host: {url!r}")
    if parts.username is not None or parts.password is not None:
        raise DeployConfigError(option, "must not carry credentials: the run's token is sent")
    if parts.query or parts.fragment:
        raise DeployConfigError(option, f"must not have a query or fragment: {url!r}")
    return parts.geturl().rstrip("/")


def env_vars(router_url: str) -> dict[str, str]:
    """The deployed agent's environment: where to send tool calls."""
    return {ROUTER_URL_ENV: router_url}


def default_staging_bucket(project: str) -> str:
    """``gs://<project>-interlock-staging``; the SDK creates it if it is missing."""
    if ":" in project:
        raise DeployConfigError(
            "--staging-bucket",
            f"required for a domain-scoped project ({project}): pass gs://BUCKET",
        )
    return f"gs://{project}-interlock-staging"


def build_spec(
    *,
    display_name: str,
    project: str,
    location: str,
    router_url: str,
    model: str = DEFAULT_MODEL,
    instruction: str | None = None,
    staging_bucket: str | None = None,
    gcs_dir_name: str | None = None,
) -> DeploySpec:
    """Validate the command-line values into a deployment; raises DeployConfigError."""
    display_name = display_name.strip()
    if not display_name:
        raise DeployConfigError("--display-name", "must not be empty")
    if len(display_name) > _MAX_DISPLAY_NAME:
        raise DeployConfigError(
            "--display-name", f"at most {_MAX_DISPLAY_NAME} characters, got {len(display_name)}"
        )
    if not _PROJECT.fullmatch(project):
        raise DeployConfigError(
            "--project",
            f"not a Google Cloud project id: {project!r} "
            "(6-30 lowercase letters, digits and hyphens)",
        )
    if not _REGION.fullmatch(location):
        raise DeployConfigError(
            "--location", f"Agent Engine runs in a region such as us-central1, got {location!r}"
        )
    if not model or model != model.strip() or any(c.isspace() for c in model):
        raise DeployConfigError("--model", f"not a model name: {model!r}")
    if instruction is None:
        instruction = DEFAULT_INSTRUCTION
    if not instruction.strip():
        raise DeployConfigError("--instruction", "must not be empty")
    if staging_bucket is None:
        staging_bucket = default_staging_bucket(project)
    else:
        name = staging_bucket.removeprefix("gs://").rstrip("/")
        if not staging_bucket.startswith("gs://") or not _BUCKET.fullmatch(name):
            raise DeployConfigError(
                "--staging-bucket",
                f"expected gs://BUCKET (a bucket, no path), got {staging_bucket!r}",
            )
        staging_bucket = f"gs://{name}"
    return DeploySpec(
        display_name=display_name,
        project=project,
        location=location,
        router_url=validate_router_url(router_url),
        model=model,
        instruction=instruction,
        staging_bucket=staging_bucket,
        gcs_dir_name=gcs_dir_name or f"interlock/{uuid.uuid4().hex}",
    )


def load_agent_module(directory: Path) -> ModuleType:
    """Copy the agent template into ``directory`` and import it as :data:`DEPLOYED_MODULE`.

    The module stays registered in ``sys.modules`` under that name (so that
    pickling refers to it by that name) until the caller removes it.
    """
    target = directory / f"{DEPLOYED_MODULE}.py"
    shutil.copyfile(TEMPLATE, target)
    spec = importlib.util.spec_from_file_location(DEPLOYED_MODULE, target)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {target}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[DEPLOYED_MODULE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[DEPLOYED_MODULE]
        raise
    return module


def require_extra() -> None:
    """Raise MissingExtra unless Google's SDK and ADK import."""
    # The SDK warns about its own use of deprecated pydantic APIs on import;
    # nothing a user of this command can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import google.adk  # noqa: F401
            import vertexai.agent_engines  # noqa: F401
        except ImportError as exc:
            raise MissingExtra() from exc


def deploy(spec: DeploySpec) -> str:
    """Build the agent, deploy it and return ``projects/P/locations/L/reasoningEngines/ID``.

    Blocks until Agent Engine has built and started the agent (minutes).
    Raises MissingExtra without the ``google`` extra and DeployFailed when
    Google refuses or fails.
    """
    require_extra()
    import google.api_core.exceptions
    import google.auth.exceptions
    import vertexai
    from vertexai import agent_engines

    with tempfile.TemporaryDirectory(prefix="interlock-agent-") as staging:
        template = load_agent_module(Path(staging))
        try:
            agent = template.build_agent(model=spec.model, instruction=spec.instruction)
            # extra_packages are archived with the paths as given: relative to
            # the staging directory, they unpack as importable top-level modules.
            with contextlib.chdir(staging):
                vertexai.init(
                    project=spec.project,
                    location=spec.location,
                    staging_bucket=spec.staging_bucket,
                )
                # AdkApp is the documented argument, but its methods' signatures
                # do not match the SDK's own Queryable protocols.
                engine = agent_engines.create(
                    agent_engines.AdkApp(agent=agent),  # type: ignore[arg-type]
                    requirements=spec.requirements,
                    extra_packages=spec.extra_packages,
                    env_vars=spec.env_vars,
                    display_name=spec.display_name,
                    description=spec.description,
                    gcs_dir_name=spec.gcs_dir_name,
                )
        except (
            google.api_core.exceptions.GoogleAPIError,
            google.auth.exceptions.GoogleAuthError,
            ValueError,  # the SDK's own checks: Python version, bucket, environment
        ) as exc:
            raise DeployFailed(str(exc)) from exc
        finally:
            sys.modules.pop(DEPLOYED_MODULE, None)
    return engine.resource_name
