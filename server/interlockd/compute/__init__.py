"""Compute for self-hosted runtimes: where a runtime (Hermes) runs, kept warm or asleep.

``base`` is the ComputeProvider seam (and what every kind's settings share);
``kinds`` is the table of compute kinds; each kind is a folder describing itself
in its ``__init__`` (settings and ``build``): ``local`` runs runtimes as
supervised subprocesses on this host, ``daytona`` and ``sprites`` place them on
those services (optional extras), sharing ``remote``. ``scheduler`` decides
where and when sessions run.
"""
