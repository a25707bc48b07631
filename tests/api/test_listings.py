"""Tags list (OCI end-8a, end-8b) and _catalog: sorted, `n`/`last` pagination with `Link`, errors."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlsplit


from tests.support.oci import expect_oci_error, image_manifest, push_blob, push_manifest, sha256
from tests.support.postgres import both_metadata_backends

pytestmark = both_metadata_backends  # the registry core on each metadata store

LINK = re.compile(r'^<([^>]+)>; rel="next"$')
TAGS = ["v1.0", "latest", "Z-upper", "a", "v1.10", "v1.9", "_under", "0", "b-1", "b.1", "b_1"]


async def tag_everything(api, repository: str, tags: list[str]) -> str:
    config = b'{"os":"linux"}'
    await push_blob(api, repository, config)
    body = image_manifest(config, [])
    for tag in tags:
        await push_manifest(api, repository, tag, body)
    return sha256(body)


async def get_page(api, path: str, **params) -> tuple[dict, str | None]:
    async with api.request("GET", path, params=params) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "application/json"
        body = json.loads(await response.text())
        link = response.headers.get("Link")
    if link is None:
        return body, None
    match = LINK.match(link)
    assert match, f"Link header is not <url>; rel=\"next\": {link!r}"
    return body, match.group(1)


async def follow(api, path: str, key: str, n: int) -> tuple[list[str], list[str]]:
    """Walk every page from `path?n=n`; returns (all items, every next link)."""
    items: list[str] = []
    links: list[str] = []
    body, link = await get_page(api, path, n=n)
    items += body[key]
    while link is not None:
        links.append(link)
        assert len(links) < 100, "pagination never ends"
        async with api.session.get(api.url("/").rstrip("/") + link if link.startswith("/") else link) as response:
            assert response.status == 200, await response.text()
            body = json.loads(await response.text())
            link_header = response.headers.get("Link")
        assert len(body[key]) <= n
        items += body[key]
        link = LINK.match(link_header).group(1) if link_header else None
    return items, links


# --- tags list ---------------------------------------------------------------------------------------------


async def test_tags_list_is_sorted_and_names_the_repository(api):
    await tag_everything(api, "library/app", TAGS)
    body, link = await get_page(api, "/v2/library/app/tags/list")
    assert body == {"name": "library/app", "tags": sorted(TAGS)}
    assert link is None


async def test_tags_list_only_has_this_repositorys_tags(api):
    await tag_everything(api, "one", ["a", "b"])
    await tag_everything(api, "two", ["c"])
    body, _ = await get_page(api, "/v2/one/tags/list")
    assert body["tags"] == ["a", "b"]


async def test_tags_pages_with_n_and_last_follow_link_until_exhausted(api):
    await tag_everything(api, "app", TAGS)
    items, links = await follow(api, "/v2/app/tags/list", "tags", 3)
    assert items == sorted(TAGS)
    assert len(links) == (len(TAGS) - 1) // 3
    for number, link in enumerate(links):
        url = urlsplit(link)
        assert url.path == "/v2/app/tags/list"
        query = parse_qs(url.query)
        assert query["n"] == ["3"]
        assert query["last"] == [sorted(TAGS)[3 * number + 2]]


async def test_a_page_that_ends_exactly_at_the_last_tag_has_no_link(api):
    await tag_everything(api, "app", ["a", "b", "c", "d"])
    body, link = await get_page(api, "/v2/app/tags/list", n=2, last="b")
    assert body["tags"] == ["c", "d"]
    assert link is None
    body, link = await get_page(api, "/v2/app/tags/list", n=4)
    assert body["tags"] == ["a", "b", "c", "d"]
    assert link is None


async def test_n_larger_than_the_tag_count_returns_everything(api):
    await tag_everything(api, "app", ["a", "b"])
    body, link = await get_page(api, "/v2/app/tags/list", n=1000)
    assert body["tags"] == ["a", "b"]
    assert link is None


async def test_last_alone_returns_the_tags_after_it(api):
    await tag_everything(api, "app", ["a", "b", "c"])
    body, _ = await get_page(api, "/v2/app/tags/list", last="a")
    assert body["tags"] == ["b", "c"]
    body, _ = await get_page(api, "/v2/app/tags/list", last="bb")  # need not be an existing tag
    assert body["tags"] == ["c"]
    body, link = await get_page(api, "/v2/app/tags/list", last="c")
    assert body["tags"] == []
    assert link is None


async def test_n_zero_is_an_empty_list(api):
    await tag_everything(api, "app", ["a", "b"])
    body, link = await get_page(api, "/v2/app/tags/list", n=0)
    assert body == {"name": "app", "tags": []}
    assert link is None


async def test_an_invalid_n_is_400(api):
    await tag_everything(api, "app", ["a"])
    for n in ("-1", "abc", "1.5", "9" * 20):
        async with api.request("GET", "/v2/app/tags/list", params={"n": n}) as response:
            assert response.status == 400, (n, response.status)
            await expect_oci_error(response, 400, "PAGINATION_NUMBER_INVALID")


async def test_tags_of_an_unknown_repository_is_404_name_unknown(api):
    async with api.request("GET", "/v2/no/such/repo/tags/list") as response:
        await expect_oci_error(response, 404, "NAME_UNKNOWN")


async def test_a_repository_with_only_blobs_has_no_tags_list(api):
    await push_blob(api, "blobs-only", b"abc")
    async with api.request("GET", "/v2/blobs-only/tags/list") as response:
        await expect_oci_error(response, 404, "NAME_UNKNOWN")


async def test_an_untagged_manifest_makes_the_repository_known_with_no_tags(api):
    config = b"{}"
    await push_blob(api, "app", config)
    body = image_manifest(config, [])
    await push_manifest(api, "app", sha256(body), body)
    page, _ = await get_page(api, "/v2/app/tags/list")
    assert page == {"name": "app", "tags": []}


async def test_deleted_tags_leave_the_list(api):
    digest = await tag_everything(api, "app", ["a", "b", "c"])
    async with api.request("DELETE", "/v2/app/manifests/b") as response:
        assert response.status == 202
    body, _ = await get_page(api, "/v2/app/tags/list")
    assert body["tags"] == ["a", "c"]
    async with api.request("DELETE", f"/v2/app/manifests/{digest}") as response:
        assert response.status == 202
    body, _ = await get_page(api, "/v2/app/tags/list")
    assert body["tags"] == []


async def test_tags_list_of_an_invalid_name_is_name_invalid(api):
    async with api.request("GET", "/v2/Upper/tags/list") as response:
        await expect_oci_error(response, 400, "NAME_INVALID")


# --- catalog ---------------------------------------------------------------------------------------------


REPOSITORIES = ["library/alpine", "library/busybox", "a", "team/z/deep", "team/a", "b-c", "b.c", "b_c"]


async def test_catalog_lists_every_repository_once_in_order(api):
    for repository in REPOSITORIES:
        await tag_everything(api, repository, ["v1", "v2"])
    body, link = await get_page(api, "/v2/_catalog")
    assert body == {"repositories": sorted(REPOSITORIES)}
    assert link is None


async def test_catalog_pages_with_n_and_last_follow_link_until_exhausted(api):
    for repository in REPOSITORIES:
        await tag_everything(api, repository, ["v1"])
    items, links = await follow(api, "/v2/_catalog", "repositories", 3)
    assert items == sorted(REPOSITORIES)
    assert len(links) == (len(REPOSITORIES) - 1) // 3
    for number, link in enumerate(links):
        url = urlsplit(link)
        assert url.path == "/v2/_catalog"
        query = parse_qs(url.query)
        assert query["n"] == ["3"]
        assert query["last"] == [sorted(REPOSITORIES)[3 * number + 2]]


async def test_catalog_with_last_and_n_zero(api):
    for repository in ("a", "b", "c"):
        await tag_everything(api, repository, ["v1"])
    body, _ = await get_page(api, "/v2/_catalog", last="a")
    assert body["repositories"] == ["b", "c"]
    body, link = await get_page(api, "/v2/_catalog", n=0)
    assert body == {"repositories": []}
    assert link is None


async def test_an_empty_registry_has_an_empty_catalog(api):
    body, link = await get_page(api, "/v2/_catalog")
    assert body == {"repositories": []}
    assert link is None


async def test_catalog_with_an_invalid_n_is_400(api):
    async with api.request("GET", "/v2/_catalog", params={"n": "many"}) as response:
        await expect_oci_error(response, 400, "PAGINATION_NUMBER_INVALID")
