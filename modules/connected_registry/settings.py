"""The desired properties (SPEC 3): one pydantic model for the module twin and the `--config` file.

Field names are the twin's. Durations stay ISO 8601 strings (as the operator wrote them, for the
reported properties) and are checked on the way in; `duration_seconds` reads them.
"""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from croniter import croniter
from connected_registry.durations import duration_seconds, parse_duration  # noqa: F401 - re-exported
from connected_registry.errors import ConfigInvalid
from connected_registry.identity import INSTANCE_NAME_RE
from connected_registry.oci.platforms import Platform, parse_platform
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

TOKEN_NAME_RE = re.compile(r"^[A-Za-z0-9-]{5,50}$")
MAX_DOCUMENT_BYTES = 32 * 1024
MAX_TOKENS_WITHOUT_GATEWAY = 20
DEFAULT_SCHEDULE = "* * * * *"
MIN_BYTES_PER_SECOND = 1000  # a limit below it would hold a blob's chunk for minutes

def _duration_between(low: str, high: str | None):
    def check(value: str) -> str:
        length = parse_duration(value)
        if length < parse_duration(low) or (high and length > parse_duration(high)):
            raise ValueError(f"{value} is out of range: allowed {low} to {high}" if high else f"{value} is below {low}")
        return value

    return check


def _cron(value: str) -> str:
    if len(value.split()) != 5 or not croniter.is_valid(value) or "R" in value.upper().split():
        raise ValueError(f"{value!r} is not a 5-field cron expression (minute hour day month weekday, UTC)")
    try:
        croniter(value).get_next(float)
    except Exception:  # croniter gives up on schedules such as "0 0 30 2 *"
        raise ValueError(f"{value!r} never fires: pick days that exist") from None
    return value


Cron = Annotated[str, AfterValidator(_cron)]
Duration = Annotated[str, AfterValidator(_duration_between("PT0S", None))]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class SyncTokenSettings(_Model):
    name: str | None = None


class SyncProperties(_Model):
    schedule: Cron = DEFAULT_SCHEDULE
    syncWindow: Annotated[str, AfterValidator(_duration_between("PT1H", "P7D"))] | None = None
    messageTtl: Annotated[str, AfterValidator(_duration_between("P1D", "P90D"))] = "P2D"

    @model_validator(mode="after")
    def _window_with_schedule(self) -> "SyncProperties":
        if self.schedule != DEFAULT_SCHEDULE and self.syncWindow is None:
            raise ValueError("syncWindow is required when schedule is not the default '* * * * *'")
        return self


def _bytes_per_second(value: int) -> int:
    if 0 < value < MIN_BYTES_PER_SECOND:
        raise ValueError(f"{value} bytes per second is too little to move a blob: use 0 for no limit, or at least "
                         f"{MIN_BYTES_PER_SECOND}")
    return value


BytesPerSecond = Annotated[int, Field(ge=0, strict=True), AfterValidator(_bytes_per_second)]


class BandwidthWindow(_Model):
    """Inside each window (a cron fire, UTC, and the `duration` after it) the link's limit is its own."""

    schedule: Cron
    duration: Annotated[str, AfterValidator(_duration_between("PT1M", "P7D"))]
    maxBytesPerSecond: BytesPerSecond


class BandwidthSettings(_Model):
    """The byte budget of the parent link, both ways (sync/bandwidth.py); 0: unlimited."""

    maxBytesPerSecond: BytesPerSecond = 0
    windows: list[BandwidthWindow] = Field(default_factory=list)


def _endpoint(value: str) -> str:
    if not re.match(r"^(?:https?://)?(?:\$upstream|\$IOTEDGE_PARENTHOSTNAME|[A-Za-z0-9.\-\[\]:]+)(?::\d{1,5})?/?$", value):
        raise ValueError(f"{value!r} is not https://host[:port], http://host[:port] or host[:port]")
    return value


Endpoint = Annotated[str, AfterValidator(_endpoint)]
MAX_ALTERNATE_ENDPOINTS = 8


class ParentSettings(_Model):
    endpoint: Endpoint | None = None
    # the same parent at other addresses (geo-replicas, replicas of a scaled-out parent), tried in order when the
    # endpoint in use fails; the first is tried again every failbackInterval (sync/endpoints.py)
    alternateEndpoints: list[Endpoint] = Field(default_factory=list, max_length=MAX_ALTERNATE_ENDPOINTS)
    failbackInterval: Annotated[str, AfterValidator(_duration_between("PT1S", "P1D"))] = "PT5M"
    kind: Literal["auto", "connected", "plain"] = "auto"
    syncToken: SyncTokenSettings = SyncTokenSettings()
    syncProperties: SyncProperties = SyncProperties()
    connectTimeout: Annotated[str, AfterValidator(_duration_between("PT0.1S", "PT5M"))] = "PT3S"
    firstByteTimeout: Annotated[str, AfterValidator(_duration_between("PT0.1S", "PT30M"))] = "PT10S"
    bandwidth: BandwidthSettings = BandwidthSettings()

    @model_validator(mode="after")
    def _distinct_endpoints(self) -> "ParentSettings":
        named = [value.rstrip("/") for value in (self.endpoint, *self.alternateEndpoints) if value is not None]
        if len(set(named)) != len(named):
            raise ValueError("alternateEndpoints must differ from endpoint and from each other")
        return self


class CacheSettings(_Model):
    maxBytes: int | str = "80%"

    @field_validator("maxBytes")
    @classmethod
    def _max_bytes(cls, value: int | str) -> int | str:
        if isinstance(value, int):
            if value < 0:
                raise ValueError("maxBytes must not be negative")
            return value
        if not re.match(r"^(100|[1-9]?\d)%$", value):
            raise ValueError(f"{value!r} must be a number of bytes or a percentage of the volume such as '80%'")
        return value


class LoggingSettings(_Model):
    logLevel: Literal["Debug", "Information", "Warning", "Error", "None"] = "Information"
    # Azure's name: one JSON record per login, pull, push, delete, refusal and control action (audit.py)
    auditLogStatus: Literal["Enabled", "Disabled"] = "Disabled"


class GarbageCollectionSettings(_Model):
    enabled: bool = True
    schedule: Cron = "0 5 * * *"


_HASH_RE = re.compile(r"^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=_-]+\$[A-Za-z0-9+/=_-]+$")
_REPOSITORY_PATTERN = r"(?:\*|[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*(?:/\*)?)"
_ACTION_RE = re.compile(
    r"^(?:repositories/" + _REPOSITORY_PATTERN + r"/(?:content/(?:read|write|delete)|metadata/(?:read|write))"
    r"|gateway/[A-Za-z][A-Za-z0-9_-]{4,39}/(?:config|message)/(?:read|write))$"
)


class TokenSettings(_Model):
    passwordHashes: list[str] = Field(min_length=1, max_length=2)
    actions: list[str] = Field(default_factory=list)
    status: Literal["enabled", "disabled"] = "enabled"

    @field_validator("passwordHashes")
    @classmethod
    def _hashes(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _HASH_RE.match(value):
                raise ValueError(
                    "each password hash must be scrypt$N$r$p$salt$hash; make one with `connected-registry token create`"
                )
        return values

    @field_validator("actions")
    @classmethod
    def _actions(cls, values: list[str]) -> list[str]:
        normalised = []
        for value in values:
            # Azure lower-cases the resource part; accept what the CLI prints in any case.
            prefix, _, rest = value.partition("/")
            candidate = value if prefix != "repositories" else f"{prefix}/{rest.lower()}"
            if not _ACTION_RE.match(candidate):
                raise ValueError(
                    f"{value!r} is not an action: use repositories/<repo, prefix/* or *>/content/read|write|delete, "
                    "repositories/<…>/metadata/read|write, or gateway/<name>/config|message/read|write"
                )
            normalised.append(candidate)
        return normalised

    @property
    def has_gateway_actions(self) -> bool:
        return any(action.startswith("gateway/") for action in self.actions)


def _repository_pattern(value: str) -> str:
    if not re.match(f"^{_REPOSITORY_PATTERN}$", value):
        raise ValueError(f"{value!r} is not a repository name, a 'prefix/*' pattern or '*'")
    return value


def _platform(value: str) -> str:
    parse_platform(value)
    return value


def _platform_list(values: list[str] | None) -> list[str] | None:
    if values is not None and not values:
        raise ValueError("list at least one platform, such as 'linux/arm64', or leave platforms out to sync every "
                         "platform")
    return values


def _address_or_network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or CIDR") from None
    return value


class DesiredProperties(_Model):
    """The module twin's `properties.desired` (SPEC 3). Unknown keys are collected, not fatal."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    name: Annotated[str, Field(pattern=INSTANCE_NAME_RE.pattern)] | None = None
    mode: Literal["ReadWrite", "ReadOnly"] = "ReadOnly"
    parent: ParentSettings | None = None
    repositories: list[Annotated[str, AfterValidator(_repository_pattern)]] = Field(default_factory=list)
    # The platforms this site runs (issue 16): of an image index only their manifests and blobs are synced.
    platforms: Annotated[list[Annotated[str, AfterValidator(_platform)]] | None, AfterValidator(_platform_list)] = None
    onDemand: bool | Literal["windowOnly"] = True
    cache: CacheSettings = CacheSettings()
    tokens: dict[str, TokenSettings] = Field(default_factory=dict)
    anonymousPull: bool = False
    # Blob GETs answer 307 to a short-lived read SAS URL (the azure blob store, with an account key), as ACR does.
    blobRedirect: bool = False
    trustedProxies: list[Annotated[str, AfterValidator(_address_or_network)]] = Field(default_factory=list)
    reportInterval: Annotated[str, AfterValidator(_duration_between("PT10S", "P1D"))] = "PT5M"
    logging: LoggingSettings = LoggingSettings()
    garbageCollection: GarbageCollectionSettings = GarbageCollectionSettings()

    @field_validator("tokens")
    @classmethod
    def _tokens(cls, tokens: dict[str, TokenSettings]) -> dict[str, TokenSettings]:
        for name in tokens:
            if not TOKEN_NAME_RE.match(name):
                raise ValueError(f"token name {name!r} must be 5 to 50 letters, digits or '-'")
        clients = [name for name, token in tokens.items() if not token.has_gateway_actions]
        if len(clients) > MAX_TOKENS_WITHOUT_GATEWAY:
            raise ValueError(
                f"{len(clients)} tokens without gateway actions; at most {MAX_TOKENS_WITHOUT_GATEWAY} are allowed"
            )
        return tokens

    @property
    def wanted_platforms(self) -> list[Platform] | None:
        """`platforms` parsed; None syncs every platform."""
        return None if self.platforms is None else [parse_platform(value) for value in self.platforms]

    @property
    def unknown_keys(self) -> list[str]:
        return sorted(self.model_extra or {})


def validate_desired(document: Any) -> DesiredProperties:
    """Validate a whole desired document (twin metadata keys such as `$version` are ignored)."""
    if not isinstance(document, dict):
        raise ConfigInvalid(["the desired properties must be a JSON object"])
    size = len(json.dumps(document, separators=(",", ":")).encode())
    if size > MAX_DOCUMENT_BYTES:
        raise ConfigInvalid([
            f"the desired properties are {size} bytes, over IoT Hub's {MAX_DOCUMENT_BYTES}-byte limit: "
            "use 'prefix/*' repository patterns and fewer tokens"
        ])
    cleaned = {key: value for key, value in document.items() if not key.startswith("$")}
    try:
        return DesiredProperties.model_validate(cleaned)
    except ValidationError as error:
        raise ConfigInvalid([_describe(problem) for problem in error.errors()]) from None


def _describe(problem: dict) -> str:
    location = ".".join(str(part) for part in problem["loc"]) or "(document)"
    message = problem["msg"].removeprefix("Value error, ")
    return f"{location}: {message}"
