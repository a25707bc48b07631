"""The aiohttp application: /v2 (one module per resource), health, and the error middleware."""

from connected_registry.api.app import create_app

__all__ = ["create_app"]
