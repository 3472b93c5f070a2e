"""The stop timings of deploy/ agree with the daemon's: Kubernetes' preStop sleep is
shutdown_announce_seconds, the time Kubernetes and compose give a stopping replica
before SIGKILL covers the announce, the grace and the close, and the probes neither kill
a draining pod nor miss that it drains. The daemon's numbers are those its settings take
from the deployment (interlock.toml and the environment, else the defaults)."""

from __future__ import annotations

from pathlib import Path

from interlockd import daemon
from interlockd.config import load_settings
from tests.deploy.files import (
    compose,
    container,
    deployment_settings,
    interlockd_services,
    mounted_source,
    seconds,
    service_env,
    the,
)

#: After the runs' grace the daemon gives other calls _LAST_CALLS_SECONDS, then closes
#: the HTTP side, the store's pool and the providers' clients: a few seconds at most.
CLOSE_MARGIN = daemon._LAST_CALLS_SECONDS + 3.0


def _pre_stop_seconds() -> float:
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", command
    assert len(command) == 2, command
    return float(command[1])


def test_pre_stop_sleeps_the_announce_and_the_grace_period_covers_the_whole_stop(
    tmp_path: Path,
) -> None:
    """preStop sleeps shutdown_announce_seconds, and terminationGracePeriodSeconds (counted
    from preStop's start) is at least preStop + announce + grace + the close."""
    settings = deployment_settings(tmp_path)
    announce = settings.shutdown_announce_seconds
    grace = settings.shutdown_grace_seconds
    assert announce > 0, "a replica must announce its stop to the balancers"
    assert _pre_stop_seconds() == announce
    termination = the("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert termination >= _pre_stop_seconds() + announce + grace + CLOSE_MARGIN


def test_probes_see_a_drain_within_the_announce_and_never_kill_a_draining_pod(
    tmp_path: Path,
) -> None:
    """Readiness fails within shutdown_announce_seconds of NOT_SERVING; liveness tolerates
    NOT_SERVING for longer than announce + grace, the whole time a pod drains."""
    settings = deployment_settings(tmp_path)
    announce = settings.shutdown_announce_seconds
    grace = settings.shutdown_grace_seconds
    readiness = container()["readinessProbe"]
    liveness = container()["livenessProbe"]
    assert readiness["periodSeconds"] * readiness.get("failureThreshold", 3) <= announce
    assert liveness["periodSeconds"] * liveness.get("failureThreshold", 3) > announce + grace


def test_compose_stop_grace_period_covers_the_announce_the_grace_and_the_close() -> None:
    """Each compose replica's stop_grace_period (SIGTERM to SIGKILL) is at least
    announce + grace + the close of its settings (interlock.toml as compose mounts it)."""
    services = interlockd_services(compose())
    assert services
    for name, service in services.items():
        env = service_env(service)
        config = mounted_source(service, env.pop("INTERLOCK_CONFIG"))
        settings = load_settings(config, env=env)
        needed = settings.shutdown_announce_seconds + settings.shutdown_grace_seconds
        assert seconds(service["stop_grace_period"]) >= needed + CLOSE_MARGIN, name
