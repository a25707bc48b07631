"""Azure's action strings and Docker's scopes, and how they map onto each other (SPEC 10).

Operations the registry checks:
  pull      content/read      (manifests and blobs)
  metadata  metadata/read     (tags list, referrers, catalog entries)
  push      content/write
  delete    content/delete
Docker scope actions: pull -> content/read or metadata/read, push -> content/write, delete -> content/delete.
"""

from __future__ import annotations

from dataclasses import dataclass

OPERATION_ACTIONS = {
    "pull": "content/read",
    "metadata": "metadata/read",
    "push": "content/write",
    "delete": "content/delete",
}
# The Docker scope action a bearer token must carry for an operation.
OPERATION_SCOPE = {"pull": "pull", "metadata": "pull", "push": "push", "delete": "delete"}
GATEWAY_SCOPE_ACTIONS = {
    "config_read": "config/read",
    "config_write": "config/write",
    "message_read": "message/read",
    "message_write": "message/write",
}


def repository_pattern_matches(pattern: str, repository: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("/*"):
        return repository.startswith(pattern[:-1])
    return pattern == repository


def repository_in_scope(patterns: list[str], repository: str) -> bool:
    return any(repository_pattern_matches(pattern, repository) for pattern in patterns)


@dataclass(frozen=True)
class Permissions:
    """What one token's actions allow."""

    repository_rules: tuple[tuple[str, str], ...]  # (pattern, "content/read"…)
    gateway_rules: frozenset[tuple[str, str]]  # (lower-case name, "config/read"…)

    @classmethod
    def from_actions(cls, actions: list[str]) -> "Permissions":
        repository_rules, gateway_rules = [], set()
        for action in actions:
            kind, _, rest = action.partition("/")
            resource, verb = rest.rsplit("/", 2)[0], "/".join(rest.rsplit("/", 2)[1:])
            if kind == "repositories":
                repository_rules.append((resource, verb))
            elif kind == "gateway":
                gateway_rules.add((resource.lower(), verb))
        return cls(tuple(repository_rules), frozenset(gateway_rules))

    def allows(self, repository: str, azure_action: str) -> bool:
        return any(
            verb == azure_action and repository_pattern_matches(pattern, repository)
            for pattern, verb in self.repository_rules
        )

    def allows_operation(self, repository: str, operation: str) -> bool:
        return self.allows(repository, OPERATION_ACTIONS[operation])

    def allows_gateway(self, name: str, azure_action: str) -> bool:
        return (name.lower(), azure_action) in self.gateway_rules

    def reads_anything(self) -> bool:
        return any(verb == "metadata/read" for _, verb in self.repository_rules)

    def grant(self, scope: "Scope") -> list[str]:
        """The subset of a requested scope's actions this token may have."""
        if scope.type == "repository":
            wanted = {"pull", "push", "delete"} if "*" in scope.actions else set(scope.actions)
            granted = []
            if "pull" in wanted and (self.allows(scope.name, "content/read") or self.allows(scope.name, "metadata/read")):
                granted.append("pull")
            if "push" in wanted and self.allows(scope.name, "content/write"):
                granted.append("push")
            if "delete" in wanted and self.allows(scope.name, "content/delete"):
                granted.append("delete")
            return granted
        if scope.type == "registry" and scope.name == "catalog":
            return ["*"] if self.reads_anything() else []
        if scope.type == "gateway":
            return [a for a in scope.actions if a in GATEWAY_SCOPE_ACTIONS and self.allows_gateway(scope.name, GATEWAY_SCOPE_ACTIONS[a])]
        return []


ANONYMOUS_PULL = Permissions((("*", "content/read"), ("*", "metadata/read")), frozenset())
NOTHING = Permissions((), frozenset())
EVERYTHING = Permissions(
    tuple(("*", action) for action in ("content/read", "content/write", "content/delete", "metadata/read", "metadata/write")),
    frozenset(),
)


@dataclass(frozen=True)
class Scope:
    type: str
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def parse_scopes(values: list[str]) -> list[Scope]:
    """Docker scope strings (`repository:NAME:pull,push`, space separated); malformed ones are skipped, and
    those naming the same resource merged into one (its actions in the order first asked for)."""
    merged: dict[tuple[str, str], dict[str, None]] = {}
    for value in values:
        for item in value.split():
            kind, sep, rest = item.partition(":")
            name, sep2, actions = rest.rpartition(":")
            if not sep or not sep2 or not name or len(item) > 600:
                continue
            kind = kind.split("(")[0]  # "repository(plugin)" is an old Docker form
            merged.setdefault((kind, name), {}).update(dict.fromkeys(a for a in actions.split(",") if a))
    return [Scope(kind, name, tuple(actions)) for (kind, name), actions in merged.items()]
