"""A root renamed in its desired properties answers with its new name everywhere at once: the status it reports,
the bearer challenge (realm and service) and the token service, which issues tokens for the new name only."""

from __future__ import annotations

import json
from pathlib import Path

import jwt

from tests.api.auth_fixtures import PASSWORDS, start_secured
from tests.support.http import basic, bearer, request
from tests.support.processes import wait_until


def _reported_name(config_path: Path) -> str | None:
    try:
        return json.loads((config_path.parent / "reported.json").read_text()).get("name")
    except (OSError, ValueError):
        return None


def test_a_renamed_root_issues_tokens_and_challenges_under_its_new_name(tmp_path: Path):
    registry = start_secured(tmp_path)
    try:
        wait_until(lambda: _reported_name(registry.config_path) == "factory-root", what="the first report")
        registry.write_config(dict(registry.document, name="factory-renamed"))
        wait_until(lambda: _reported_name(registry.config_path) == "factory-renamed", what="the new name reported")

        reply = request(f"{registry.url}/v2/")
        assert reply.status == 401
        assert reply.headers["WWW-Authenticate"] == (
            f'Bearer realm="http://{registry.host}/acr/oauth2/token",service="factory-renamed"')

        credentials = basic("reader1", PASSWORDS["reader1"])
        scope = "scope=repository:factory/app:pull"
        reply = request(f"{registry.url}/acr/oauth2/token?service=factory-renamed&{scope}", headers=credentials)
        assert reply.status == 200, reply.body
        token = reply.json()["token"]
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["aud"] == "factory-renamed" and claims["iss"] == "factory-renamed"
        assert request(f"{registry.url}/v2/factory/app/tags/list", headers=bearer(token)).status in (200, 404)

        reply = request(f"{registry.url}/acr/oauth2/token?service=factory-root&{scope}", headers=credentials)
        assert reply.status == 400 and "factory-renamed" in reply.body.decode(), reply.body
    finally:
        registry.process.stop()
