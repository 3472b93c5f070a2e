"""Fly.io Sprites as compute (compute kind ``"fly_sprites"``; the ``sprites`` extra).

This module describes the kind (its settings and ``build``) without loading the
SDK; ``provider`` runs sessions as services in sprites through it; ``errors``
reads the SDK's failures.
"""

from __future__ import annotations

from typing import Literal

from pydantic import SecretStr

from interlockd.compute.base import (
    ComputeDeps,
    ComputeKind,
    ComputeProvider,
    ComputeProviderSettings,
)


class FlySpritesSettings(ComputeProviderSettings):
    """Runtimes as services in Fly.io Sprites."""

    kind: Literal["fly_sprites"] = "fly_sprites"
    #: The API's base URL (default: the public one).
    api_url: str = ""
    #: The organization's token.
    api_key: SecretStr | None = None


def build(c: FlySpritesSettings, deps: ComputeDeps) -> ComputeProvider:
    """The provider of one ``kind = "fly_sprites"`` table; the SDK loads here."""
    from interlockd.compute.sprites.provider import FlySpritesProvider

    token = c.api_key.get_secret_value() if c.api_key else ""
    if c.api_url:
        return FlySpritesProvider(token=token, base_url=c.api_url)
    return FlySpritesProvider(token=token)


KIND = ComputeKind(FlySpritesSettings, build)
