"""Fixtures of the adversarial suite: two tenants in one real daemon (see world.py)."""

from tests.security.world import world

__all__ = ["world"]
