"""The real daemons (module-scoped, from tests/api) for the pull-through tests with IoT Edge's engine."""

from tests.api.conftest import containerd, dockerd  # noqa: F401 - fixtures shared with tests/api
