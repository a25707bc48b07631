"""Platforms (issue 16): the OCI platform strings of the `platforms` setting, and which entries of an image index a
site that runs only those platforms leaves out.

An index is kept byte for byte (its digest is what clients pull by); only the manifests it names are chosen. An
entry with a platform is kept when one of the wanted platforms matches it. An entry without one (an artifact, a
nested index) is kept, unless it says it is about a left-out entry: docker's attestation manifests name the image
they describe in `vnd.docker.reference.digest`. An OCI artifact that names its subject in its own body is left out
once that body is read (sync.downstream), as only then is its subject known.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

_PART = r"[a-z0-9][a-z0-9._-]{0,63}"
_PLATFORM_RE = re.compile(rf"^({_PART})/({_PART})(?:/({_PART}))?$")
# The variant an entry without one has (as containerd and moby normalise them): linux/arm64 is v8, linux/arm v7.
_DEFAULT_VARIANTS = {"arm64": "v8", "arm": "v7"}
DOCKER_REFERENCE_DIGEST = "vnd.docker.reference.digest"


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)

    def matches(self, entry: Platform) -> bool:
        """Whether an index entry's platform is this wanted one: a wanted platform without a variant takes every
        variant of its architecture ("linux/arm64" takes linux/arm64/v8)."""
        if (self.os, self.architecture) != (entry.os, entry.architecture):
            return False
        return self.variant is None or self.variant == (entry.variant or _DEFAULT_VARIANTS.get(entry.architecture))


def parse_platform(text: str) -> Platform:
    """An OCI platform string, os/architecture[/variant], in lower case; ValueError saying how to write one."""
    match = _PLATFORM_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a platform: write os/architecture[/variant] in lower case, such as "
                         "'linux/arm64' or 'linux/arm/v7'")
    return Platform(*match.groups())


def entry_platform(raw: Any) -> Platform | None:
    """The platform of an index entry (its `platform` object); None when it has none, or one that names no real
    platform (buildx writes unknown/unknown on its attestation manifests). Never an error: an index the registry
    took before still syncs, with such an entry kept."""
    if not isinstance(raw, dict):
        return None
    os_name, architecture, variant = raw.get("os"), raw.get("architecture"), raw.get("variant")
    if not isinstance(os_name, str) or not isinstance(architecture, str) or "unknown" in (os_name, architecture):
        return None
    return Platform(os_name, architecture, variant if isinstance(variant, str) and variant else None)


def describes(annotations: Any) -> str | None:
    """The manifest an index entry is about, as docker's attestation manifests say it; None otherwise."""
    if isinstance(annotations, dict) and isinstance(annotations.get(DOCKER_REFERENCE_DIGEST), str):
        return annotations[DOCKER_REFERENCE_DIGEST]
    return None


class IndexEntry(Protocol):
    """What the choice reads of one entry of an index (oci.manifest.Descriptor has these)."""

    digest: str
    platform: Platform | None
    describes: str | None


def left_out(entries: Sequence[IndexEntry], wanted: Iterable[Platform] | None) -> set[str]:
    """The digests of the entries a site running only `wanted` does not copy (None: every platform, nothing left
    out). A digest that any entry keeps is kept."""
    if wanted is None:
        return set()
    wanted = list(wanted)
    kept, out = set(), set()
    for entry in entries:
        if entry.platform is not None:
            (kept if any(platform.matches(entry.platform) for platform in wanted) else out).add(entry.digest)
    out -= kept
    about_left_out = {entry.digest for entry in entries if entry.platform is None and entry.describes in out}
    return out | about_left_out


def kept_by_platform(entries: Sequence[IndexEntry], wanted: Iterable[Platform] | None) -> set[str]:
    """The digests of the entries whose platform one of `wanted` matches (every platform entry when None)."""
    wanted = None if wanted is None else list(wanted)
    return {entry.digest for entry in entries if entry.platform is not None
            and (wanted is None or any(platform.matches(entry.platform) for platform in wanted))}
