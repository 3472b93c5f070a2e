"""Compute for self-hosted runtimes: where a runtime (Hermes) runs, kept warm or asleep.

``base`` is the ComputeProvider seam; ``local`` runs runtimes as supervised
subprocesses on this host; ``daytona`` and ``fly_sprites`` place them on those
services (optional extras).
"""
