"""The Sandboxes servicer: tenants, their API keys and quotas (operator only)."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from interlock.v1 import sandboxes_pb2 as pb
from interlockd.api import validation as v
from interlockd.api.auth import (
    API_KEY_PREFIX,
    Authenticator,
    display_prefix,
    hash_secret,
    new_secret,
)
from interlockd.api.handlers import Context, unary
from interlockd.store.base import ApiKey, Quotas, Sandbox, Store


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def quotas_from_proto(q: pb.Quotas) -> Quotas:
    return Quotas(
        max_concurrent_runs=v.non_negative(
            q.max_concurrent_runs, "quotas.max_concurrent_runs", 1_000_000
        ),
        max_concurrent_runs_per_end_user=v.non_negative(
            q.max_concurrent_runs_per_end_user, "quotas.max_concurrent_runs_per_end_user", 1_000_000
        ),
        max_tokens_per_day=v.non_negative(
            q.max_tokens_per_day, "quotas.max_tokens_per_day", 10**15
        ),
        usd_per_day=v.usd(q.usd_per_day, "quotas.usd_per_day"),
        usd_per_month=v.usd(q.usd_per_month, "quotas.usd_per_month"),
        end_user_usd_per_day=v.usd(q.end_user_usd_per_day, "quotas.end_user_usd_per_day"),
        end_user_usd_per_month=v.usd(q.end_user_usd_per_month, "quotas.end_user_usd_per_month"),
    )


def sandbox_proto(s: Sandbox) -> pb.Sandbox:
    return pb.Sandbox(
        sandbox_id=s.id,
        name=s.name,
        create_time=timestamp(s.created_at),
        quotas=pb.Quotas(
            max_concurrent_runs=s.quotas.max_concurrent_runs,
            max_concurrent_runs_per_end_user=s.quotas.max_concurrent_runs_per_end_user,
            max_tokens_per_day=s.quotas.max_tokens_per_day,
            usd_per_day=s.quotas.usd_per_day,
            usd_per_month=s.quotas.usd_per_month,
            end_user_usd_per_day=s.quotas.end_user_usd_per_day,
            end_user_usd_per_month=s.quotas.end_user_usd_per_month,
        ),
    )


def key_proto(k: ApiKey) -> pb.ApiKey:
    out = pb.ApiKey(
        key_id=k.id,
        sandbox_id=k.sandbox_id,
        name=k.name,
        prefix=k.prefix,
        create_time=timestamp(k.created_at),
    )
    if k.revoked_at is not None:
        out.revoke_time.CopyFrom(timestamp(k.revoked_at))
    return out


async def create_api_key(store: Store, sandbox_id: str, name: str) -> tuple[ApiKey, str]:
    """Make a key for the sandbox; return its record and its secret (shown once)."""
    secret = new_secret(API_KEY_PREFIX)
    key = await store.create_api_key(sandbox_id, name, hash_secret(secret), display_prefix(secret))
    return key, secret


class SandboxesServicer:
    def __init__(self, auth: Authenticator, store: Store) -> None:
        self._auth = auth
        self._store = store

    @unary
    async def CreateSandbox(
        self, request: pb.CreateSandboxRequest, context: Context
    ) -> pb.CreateSandboxResponse:
        await self._auth.operator(context)
        sandbox = await self._store.create_sandbox(
            v.name(request.name, "name"), quotas_from_proto(request.quotas)
        )
        return pb.CreateSandboxResponse(sandbox=sandbox_proto(sandbox))

    @unary
    async def GetSandbox(
        self, request: pb.GetSandboxRequest, context: Context
    ) -> pb.GetSandboxResponse:
        await self._auth.operator(context)
        sandbox = await self._store.get_sandbox(v.identifier(request.sandbox_id, "sandbox_id"))
        return pb.GetSandboxResponse(sandbox=sandbox_proto(sandbox))

    @unary
    async def ListSandboxes(
        self, request: pb.ListSandboxesRequest, context: Context
    ) -> pb.ListSandboxesResponse:
        await self._auth.operator(context)
        page = await self._store.list_sandboxes(
            v.page_size(request.page_size, default=100, maximum=500),
            v.short_text(request.page_token, "page_token", 512),
        )
        return pb.ListSandboxesResponse(
            sandboxes=[sandbox_proto(s) for s in page.items], next_page_token=page.next_page_token
        )

    @unary
    async def DeleteSandbox(
        self, request: pb.DeleteSandboxRequest, context: Context
    ) -> pb.DeleteSandboxResponse:
        await self._auth.operator(context)
        sandbox_id = v.identifier(request.sandbox_id, "sandbox_id")
        keys = await self._store.list_api_keys(sandbox_id)
        await self._store.delete_sandbox(sandbox_id)
        for key in keys:
            self._auth.forget_key(key.id)
        return pb.DeleteSandboxResponse()

    @unary
    async def SetQuotas(
        self, request: pb.SetQuotasRequest, context: Context
    ) -> pb.SetQuotasResponse:
        await self._auth.operator(context)
        sandbox = await self._store.set_quotas(
            v.identifier(request.sandbox_id, "sandbox_id"), quotas_from_proto(request.quotas)
        )
        return pb.SetQuotasResponse(sandbox=sandbox_proto(sandbox))

    @unary
    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Context
    ) -> pb.CreateApiKeyResponse:
        await self._auth.operator(context)
        key, secret = await create_api_key(
            self._store,
            v.identifier(request.sandbox_id, "sandbox_id"),
            v.name(request.name or "default", "name"),
        )
        return pb.CreateApiKeyResponse(api_key=key_proto(key), secret=secret)

    @unary
    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: Context
    ) -> pb.ListApiKeysResponse:
        await self._auth.operator(context)
        keys = await self._store.list_api_keys(v.identifier(request.sandbox_id, "sandbox_id"))
        return pb.ListApiKeysResponse(api_keys=[key_proto(k) for k in keys])

    @unary
    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: Context
    ) -> pb.RevokeApiKeyResponse:
        await self._auth.operator(context)
        key = await self._store.revoke_api_key(
            v.identifier(request.sandbox_id, "sandbox_id"), v.identifier(request.key_id, "key_id")
        )
        self._auth.forget_key(key.id)
        return pb.RevokeApiKeyResponse(api_key=key_proto(key))

    @unary
    async def SetSecret(
        self, request: pb.SetSecretRequest, context: Context
    ) -> pb.SetSecretResponse:
        await self._auth.operator(context)
        await self._store.set_secret(
            v.identifier(request.sandbox_id, "sandbox_id"),
            v.secret_name(request.name),
            v.secret_value(request.value),
        )
        return pb.SetSecretResponse()

    @unary
    async def ListSecrets(
        self, request: pb.ListSecretsRequest, context: Context
    ) -> pb.ListSecretsResponse:
        await self._auth.operator(context)
        sandbox_id = v.identifier(request.sandbox_id, "sandbox_id")
        await self._store.get_sandbox(sandbox_id)  # NOT_FOUND for an unknown sandbox
        return pb.ListSecretsResponse(names=await self._store.list_secret_names(sandbox_id))

    @unary
    async def DeleteSecret(
        self, request: pb.DeleteSecretRequest, context: Context
    ) -> pb.DeleteSecretResponse:
        await self._auth.operator(context)
        sandbox_id = v.identifier(request.sandbox_id, "sandbox_id")
        await self._store.get_sandbox(sandbox_id)
        await self._store.delete_secret(sandbox_id, v.secret_name(request.name))
        return pb.DeleteSecretResponse()
