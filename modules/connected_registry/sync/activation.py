"""Activation (SPEC 6): which kind of parent this is (a connected registry, or a plain OCI registry with no
activation and no feed), and this child's activation at a connected one, with the parent's refusals
(ALREADY_ACTIVE, DEACTIVATED, MODE_INCOMPATIBLE) reported as they are."""

from __future__ import annotations

import logging

from connected_registry.auth.signing import load_or_create_key, public_key_pem
from connected_registry.sync.parent_client import ControlAnswer, ParentProtocolError, ParentUnauthorized
from connected_registry.sync.state import SyncContext

log = logging.getLogger("connected_registry.sync")


class ActivationRefused(Exception):
    """The parent refused this child itself (not its token): `retry` when the refusal may pass."""

    def __init__(self, code: str, message: str, retry: bool) -> None:
        self.code, self.retry = code, retry
        super().__init__(message)


class Activation:
    def __init__(self, sync: SyncContext, kind: str = "auto") -> None:
        self.sync = sync
        self.kind = kind  # auto | connected | plain (the parent's kind in the desired properties)
        since = sync.store.control.state().activated_since
        if since is not None:  # Active before a restart: it is deployed, and says so until the parent says otherwise
            sync.state.activation, sync.state.activated_since = "Active", since

    async def detect_parent_kind(self) -> None:
        """Only an answer decides (kind auto): once known, the parent's kind stays for the life of the instance."""
        state = self.sync.state
        if state.parent_kind is None:
            connected = self.kind == "connected" or (
                self.kind == "auto" and await self.sync.parent.is_connected_parent())
            state.parent_kind = "connected" if connected else "plain"

    async def activate(self) -> None:
        sync, identity = self.sync, self.sync.identity
        document = {"instanceId": identity.instance_id, "deviceId": identity.device_id, "mode": identity.mode,
                    "version": identity.version, "messageTtl": identity.message_ttl,
                    "repositories": identity.repositories, "bundleKey": self._bundle_key()}
        answer = await sync.parent.control("POST", f"/registries/{identity.name}/activate", body=document)
        sync.parent_answered()
        if answer.status == 200:
            await self._learn_bundle_key(answer.document.get("bundleKey"))
            await sync.became_active()
            for code in ("ALREADY_ACTIVE", "DEACTIVATED", "MODE_INCOMPATIBLE"):
                sync.status.clear(code)
            sync.on_change()
            log.info("activated %s at %s", identity.name, sync.parent.endpoint)
            return
        raise self._refusal(answer)

    def _bundle_key(self) -> str:
        """This instance's public key, which the parent keeps to verify the outbox bundles it exports (issue 17)."""
        return public_key_pem(load_or_create_key(self.sync.store.data_dir))

    async def _learn_bundle_key(self, key: object) -> None:
        """The parent's bundle-signing key, kept to verify the bundles it exports (issue 17: `import`)."""
        if isinstance(key, str) and key.startswith("-----BEGIN PUBLIC KEY-----") and len(key) < 4096 \
                and key != self.sync.store.control.state().parent_key:
            await self.sync.store.control.update_state(parent_key=key)

    def _refusal(self, answer: ControlAnswer) -> Exception:
        """Why the parent did not activate this child, as the error the loop handles (ActivationRefused stops it
        for good unless the refusal may pass: ALREADY_ACTIVE, while the other instance may go)."""
        endpoint, name, status = self.sync.parent.endpoint, self.sync.identity.name, self.sync.status
        code, message = answer.error_code, answer.error_message(f"activation answered {answer.status}")
        if answer.status in (401, 403) and code not in ("MODE_INCOMPATIBLE",):
            return ParentUnauthorized(f"parent {endpoint} refused the sync token for {name} ({answer.status}): check "
                                      f"the token's gateway/{name} actions and SyncTokenPassword in "
                                      "ACR_REGISTRY_CONNECTION_STRING", status=answer.status)
        if code == "ALREADY_ACTIVE":
            status.set("ALREADY_ACTIVE", message=message)
            return ActivationRefused(code, message, retry=True)
        if code == "DEACTIVATED":
            status.set("DEACTIVATED", message=message)
            return ActivationRefused(code, message, retry=False)
        if code == "MODE_INCOMPATIBLE":
            status.set("MODE_INCOMPATIBLE", message=message)
            return ActivationRefused(code, message, retry=False)
        return ParentProtocolError(f"activation at {endpoint} answered {answer.status}: {message}")
