"""``interlock google deploy``: the agent that runs Interlock turns on Vertex AI Agent
Engine. It talks to Google, not to a daemon, so it needs no key; its work is in
:mod:`interlock.google.deploy`."""

from __future__ import annotations

import argparse
import sys

from interlock.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    CommandTree,
    Io,
)
from interlock.google.deploy import (
    DEFAULT_MODEL,
    DeployConfigError,
    DeployFailed,
    MissingExtra,
    build_spec,
    deploy,
    require_extra,
)


def add_commands(tree: CommandTree) -> None:
    """``interlock google deploy``."""
    google = tree.group("google", "Vertex AI Agent Engine (needs the google extra)")
    help_text = "deploy the agent that runs Interlock turns on Agent Engine"
    google_deploy = google.add_parser(
        "deploy",
        help=help_text,
        description=help_text[:1].upper()
        + help_text[1:]
        + ": an ADK agent with the system prompt and one tool, dispatch, that sends "
        "tool calls back to the router. Prints the reasoning engine name to run on.",
        allow_abbrev=False,
    )
    google_deploy.set_defaults(local_handler=_google_deploy)
    google_deploy.add_argument(
        "--display-name", required=True, metavar="NAME", help="the agent's name in Google Cloud"
    )
    google_deploy.add_argument("--project", required=True, help="the Google Cloud project id")
    google_deploy.add_argument(
        "--location", required=True, metavar="REGION", help="where it runs, e.g. us-central1"
    )
    google_deploy.add_argument(
        "--router-url",
        required=True,
        metavar="URL",
        help="the daemon's HTTP side as the agent reaches it, e.g. https://router.example.com",
    )
    google_deploy.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"the Gemini model (default {DEFAULT_MODEL})"
    )
    prompt = google_deploy.add_mutually_exclusive_group()
    prompt.add_argument("--instruction", metavar="TEXT", help="the system prompt")
    prompt.add_argument(
        "--instruction-file", metavar="FILE", help="read the system prompt from FILE ('-': stdin)"
    )
    google_deploy.add_argument(
        "--staging-bucket",
        metavar="gs://BUCKET",
        help="where the SDK uploads the package (default gs://PROJECT-interlock-staging, "
        "created if missing)",
    )


def _instruction(args: argparse.Namespace) -> str | None:
    """The system prompt from --instruction or --instruction-file; None for the default."""
    path: str | None = args.instruction_file
    if path is None:
        text: str | None = args.instruction
        return text
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as file:
                text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise DeployConfigError("--instruction-file", f"cannot read it: {exc}") from None
    if not text.strip():
        raise DeployConfigError("--instruction-file", f"{path} is empty")
    return text


def _google_deploy(args: argparse.Namespace, io: Io) -> int:
    try:
        spec = build_spec(
            display_name=args.display_name,
            project=args.project,
            location=args.location,
            router_url=args.router_url,
            model=args.model,
            instruction=_instruction(args),
            staging_bucket=args.staging_bucket,
        )
        require_extra()
    except (DeployConfigError, MissingExtra) as exc:
        io.err.write(f"error: {exc}\n")
        return EXIT_USAGE
    if spec.router_url.startswith("http:"):
        io.err.write(
            "warning: --router-url is plain http: dispatch tokens and tool results "
            "will cross the network unencrypted\n"
        )
    io.err.write(
        f"deploying {spec.display_name!r} to {spec.project} in {spec.location}; "
        "Agent Engine takes several minutes to build it\n"
    )
    try:
        name = deploy(spec)
    except DeployFailed as exc:
        io.err.write(f"error: deploy failed: {exc}\n")
        return EXIT_ERROR
    io.out.write(name + "\n")
    io.err.write(f"run on it with: interlock run --provider google --google-engine {name} ...\n")
    return EXIT_OK
