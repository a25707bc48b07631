"""The report a child posts to its parent (SPEC 11): its reported document (SPEC 4) and, under `children`, its own
subtree. The parent keeps it and shows it to operators, so it is checked at the door: every field that is read has
its type, and no string anywhere carries a control character (a terminal escape sequence in a name or message).
Fields this version does not know are kept (a newer child may send more), under the same rule for their text."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from connected_registry.identity import INSTANCE_NAME_RE
from connected_registry.printable import CONTROL_CHARACTERS, printable
from connected_registry.settings import _describe

_NO_CONTROL = "control characters (such as terminal escape sequences) are not allowed"


def _text(value: str) -> str:
    if CONTROL_CHARACTERS.search(value):
        raise ValueError(_NO_CONTROL)
    return value


def _json(value: Any) -> Any:
    """Any JSON value, as long as none of its strings (keys included) has a control character."""

    def walk(item: Any, path: str) -> None:
        if isinstance(item, str) and CONTROL_CHARACTERS.search(item):
            raise ValueError(f"{_NO_CONTROL} (in {path or 'its text'})")
        if isinstance(item, dict):
            for key, inner in item.items():
                where = f"{path}.{printable(key)}".lstrip(".")
                walk(key, where)
                walk(inner, where)
        elif isinstance(item, list):
            for index, inner in enumerate(item):
                walk(inner, f"{path}.{index}".lstrip("."))

    walk(value, "")
    return value


Text = Annotated[str, AfterValidator(_text)]
Name = Annotated[str, Field(pattern=INSTANCE_NAME_RE.pattern)]
Json = Annotated[Any, AfterValidator(_json)]
Count = Annotated[int, Field(ge=0)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    __pydantic_extra__: dict[Text, Json]


class Activation(_Part):
    status: Text | None = None
    instanceId: Text | None = None
    deviceId: Text | None = None
    since: Text | None = None


class StatusDetail(_Part):
    type: Text | None = None
    severity: Text | None = None
    code: Text | None = None
    description: Text | None = None
    timestamp: Text | None = None
    correlationId: Text | None = None


class Parent(_Part):
    endpoint: Text | None = None
    endpointInUse: Text | None = None
    lastEndpointSwitch: _Part | None = None
    kind: Text | None = None
    syncProperties: _Part | None = None


class Sync(_Part):
    pendingUploads: Count | None = None
    rejectedUploads: Count | None = None
    repositories: Count | None = None
    bytesDownloaded: Count | None = None
    bytesUploaded: Count | None = None
    platforms: _Part | None = None
    cursor: int | None = None
    runs: Count | None = None
    errors: Count | None = None
    operation: _Part | None = None
    nextWindowStart: Text | None = None
    nextWindowEnd: Text | None = None


class RegistrySyncResult(_Part):
    syncTrigger: Text | None = None
    syncState: Text | None = None
    lastSyncStartTime: Text | None = None
    lastSyncEndTime: Text | None = None
    lastSuccessfulSyncEndTime: Text | None = None


class Report(_Part):
    """A reported document (SPEC 4) with its subtree."""

    version: Text | None = None
    name: Name | None = None
    mode: Literal["ReadWrite", "ReadOnly"] | None = None
    activation: Activation | None = None
    connectionState: Text | None = None
    parent: Parent | None = None
    lastSyncTime: Text | None = None
    registrySyncResult: RegistrySyncResult | None = None
    lastActivityTime: Text | None = None
    sync: Sync | None = None
    loginServer: _Part | None = None
    statusDetails: list[StatusDetail] | None = None
    cache: _Part | None = None
    garbageCollection: _Part | None = None
    appliedDesiredVersion: int | None = None
    children: list[ChildEntry] | None = None


class ChildEntry(_Part):
    """One child in a subtree, as `GET /acr/connected/v1/registries` shows it."""

    name: Name | None = None
    mode: Literal["ReadWrite", "ReadOnly"] | None = None
    activation: Activation | None = None
    reportedAt: Text | None = None
    connectionState: Text | None = None
    report: Report | None = None
    children: list[ChildEntry] | None = None


def report_problems(document: dict) -> list[str]:
    """What is wrong with a child's report, each naming its field; empty when it may be kept."""
    try:
        Report.model_validate(document)
    except ValidationError as error:
        return [printable(_describe(problem))[:300] for problem in error.errors()]
    except RecursionError:
        return ["(document): nested too deep to be a report"]
    return []
