"""One instance's bundles, for the control API of a running instance (through the ApiContext hook, so api/ never
imports this package) and for the command line on a stopped data directory: export, inventory and import with
the instance's key, scope and `platforms`, one import at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from connected_registry.oci.errors import OciError
from connected_registry.storage import RegistryStore

if TYPE_CHECKING:
    from connected_registry.bundles.export import Output
    from connected_registry.oci.platforms import Platform

# The work itself is imported when a bundle is first asked for: it loads PyJWT, cryptography and the sync package,
# which an idle root (the embedded default) never needs (its idle memory).


class Bundles:
    def __init__(self, store: RegistryStore, data_dir: str, identity: Callable[[], dict],
                 scope: Callable[[], list[str]],
                 platforms: Callable[[], "list[Platform] | None"] = lambda: None,
                 mode: Callable[[], str] = lambda: "ReadWrite") -> None:
        self.store, self.data_dir = store, data_dir
        self.identity = identity  # {"name", "instanceId"}, read when needed (a new name applies)
        self.scope = scope  # what this instance syncs; ["*"] for a root
        self.platforms = platforms
        self.mode = mode  # a ReadOnly instance takes no outbox bundle
        self._importing = asyncio.Lock()
        self._key = None

    @property
    def key(self):
        if self._key is None:
            from connected_registry.auth.signing import load_or_create_key  # deferred: see the top

            self._key = load_or_create_key(self.data_dir)  # the token service's ES256 key (auth/signing.py)
        return self._key

    def public_key_pem(self) -> str:
        from connected_registry.auth.signing import public_key_pem  # deferred: see the top

        return public_key_pem(self.key)

    def export_patterns(self, patterns: list[str] | None, for_child: str | None) -> list[str]:
        """`--repository` patterns, else a child's scope as it activated here (`--for`), else this instance's."""
        if patterns:
            return patterns
        if for_child:
            child = self.store.control.child(for_child)
            if child is None:
                raise OciError("NAME_UNKNOWN", f"{for_child} has never activated here: give --repository patterns")
            return child.repositories or ["*"]
        return self.scope()

    async def export(self, patterns: list[str], have: dict | None, output: "Output", outbox: bool = False,
                     platforms: list[str] | None = None) -> dict:
        from connected_registry.bundles.document import Inventory  # deferred: see the top
        from connected_registry.bundles.export import ExportRequest, export_bundle

        request = ExportRequest(patterns, Inventory.from_json(have, "--have") if have is not None else None, outbox,
                                _platforms(platforms))
        return await export_bundle(self.store, self.key, self.identity(), request, output, self.store.clock)

    async def export_tar(self, patterns: list[str], have: dict | None, write: Callable[[bytes], Awaitable],
                         outbox: bool = False, platforms: list[str] | None = None) -> dict:
        from connected_registry.bundles.export import TarOutput  # deferred: see the top

        return await self.export(patterns, have, TarOutput(write), outbox, platforms)

    def inventory(self, patterns: list[str] | None = None) -> dict:
        from connected_registry.bundles.importer import take_inventory  # deferred: see the top

        return take_inventory(self.store, patterns or self.scope(), self.identity()).to_json()

    async def import_members(self, bundle: AsyncIterator, *, unsigned: bool = False, repository: str | None = None,
                             trust_key: str | None = None, started: Callable[[], Awaitable[None]] | None = None,
                             on_image: Callable[[str, str, str], Awaitable[None]]) -> dict:
        """Verify and stage the whole bundle, then (`started` heard) apply it; one import at a time."""
        from connected_registry.bundles.importer import apply_bundle  # deferred: see the top
        from connected_registry.bundles.staging import Stager

        async with self._importing:
            stager = Stager(self.store, [] if unsigned else self._trusted(trust_key), unsigned, repository)
            staged = await stager.stage(bundle)
            if started is not None:
                await started()
            summary = await apply_bundle(self.store, staged, self.scope(), self.platforms(), on_image,
                                         self.store.clock, self.mode())
            if staged.manifest.direction == "outbox" and not summary["replay"]:
                summary["receipt"] = self._receipt(staged.manifest, summary)
            return summary

    def _receipt(self, outbox, summary: dict) -> str:
        """The signed receipt of an outbox bundle applied here, for the child (`import --receipt FILE`)."""
        from connected_registry.bundles.document import fingerprint, sign  # deferred: see the top
        from connected_registry.bundles.upstream import receipt_of

        parent = {**self.identity(), "keyFingerprint": fingerprint(self.key)}
        receipt = receipt_of(outbox, parent, self.store.control.event_bounds()[1], summary["time"])
        return sign(receipt, self.key).decode()

    async def import_receipt(self, signed: bytes, trust_key: str | None = None) -> dict:
        """A parent's receipt: the outbox entries it names are delivered."""
        from connected_registry.bundles.document import verify  # deferred: see the top
        from connected_registry.bundles.upstream import apply_receipt

        trusted = [key for key in self._trusted(trust_key) if key.role != "child"]
        if not trusted:
            raise OciError("BUNDLE_UNTRUSTED", "no trusted key for this receipt: give the parent's public key with "
                           "--trust-key FILE")
        receipt = verify(signed, trusted[0].key)
        if receipt.direction != "receipt":
            raise OciError("BUNDLE_INVALID", "this is a bundle, not a receipt: import it without --receipt")
        return {"delivered": await apply_receipt(self.store, receipt), "from": receipt.exporter.get("name")}

    async def import_stream(self, read: Callable[[int], Awaitable[bytes]], **options) -> dict:
        from connected_registry.bundles.tar import members  # deferred: see the top

        return await self.import_members(members(read), **options)

    def _trusted(self, trust_key: str | None) -> list:
        """`--trust-key` alone when given; else the parent's key and the children's, learned at activation."""
        from connected_registry.bundles.document import TrustedKey, load_public_key  # deferred: see the top

        if trust_key:
            return [TrustedKey(load_public_key(trust_key, "the key given with --trust-key"), "given")]
        state = self.store.control.state()
        keys = [TrustedKey(load_public_key(state.parent_key, "the parent key learned at activation"), "parent")] \
            if state.parent_key else []
        return keys + [TrustedKey(load_public_key(pem, f"the key {name} activated with"), "child", name)
                       for name, pem in sorted(state.child_keys.items())]


def _platforms(platforms: list[str] | None) -> list[str] | None:
    """`--platform` values checked as the `platforms` setting's (os/architecture[/variant])."""
    from connected_registry.oci.platforms import parse_platform  # deferred: see the top

    for text in platforms or []:
        try:
            parse_platform(text)
        except ValueError as error:
            raise OciError("REQUEST_INVALID", f"--platform {text!r}: {error}") from None
    return platforms or None
