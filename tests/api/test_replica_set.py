"""The registry core through three replicas behind nginx (round robin, no stickiness), against one replica behind
the same nginx: the same test functions as tests/api's own modules (imported here, not copied), with the `api`
fixture pointing at the balancer. Every request of a test may land on another replica: a chunked upload's POST,
PATCHes and PUT, a push and the pull after it, a delete and the 404 after it.

The replica sets are PostgreSQL + Azurite (tests/support/cluster.py), one per module and parameter (starting one
takes seconds), emptied before each test (`forget_content`: the metadata tables, behind the replicas' backs, so a
replica that cached content would show here as a failure).

Left in their own modules: the tests that look into the in-process store (`api.store`), the forwarded-host test
(the balancer sets X-Forwarded-Host itself), and the interrupted PATCH (through a proxy the cut request's last
bytes are still in flight when the test's next request reads the offset: the offset only grows, which a client
sees by asking again)."""

from __future__ import annotations

import urllib.request
from types import SimpleNamespace
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.api import test_blobs as blobs
from tests.api import test_listings as listings
from tests.api import test_manifests as manifests
from tests.api import test_referrers as referrers
from tests.api import test_uploads as uploads
from tests.support.oci import random_bytes, sha256, start_upload
from tests.support.processes import wait_until

pytestmark = pytest.mark.parametrize("replica_set", [1, 3], ids=["one-replica", "three-replicas"], indirect=True,
                                     scope="module")


class BalancedApi:
    """The `api` fixture's surface (tests/support/oci.py ServedStore) over the balancer's URL."""

    def __init__(self, replica_set, session: aiohttp.ClientSession) -> None:
        self.base, self.session = replica_set.url, session
        self.server = SimpleNamespace(host="127.0.0.1", port=replica_set.port)  # for the raw-socket tests

    def url(self, path: str) -> str:
        return self.base + path

    def request(self, method: str, path: str, **kwargs):
        return self.session.request(method, self.url(path), **kwargs)


@pytest.fixture
async def api(replica_set):
    replica_set.forget_content()
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield BalancedApi(replica_set, session)


# The subset (requests that may land on different replicas; single-request input checks stay in their modules):
# imported by name, so each runs here with this module's `api` and in its own module in-process.
_CORE = {
    uploads: [
        "test_post_starts_an_upload_with_202_location_range_and_uuid",
        "test_each_post_starts_a_distinct_session",
        "test_post_without_trailing_slash_also_starts_an_upload",
        "test_put_with_the_whole_body_completes_the_upload_with_201",
        "test_a_finished_upload_session_is_gone",
        "test_pushing_a_blob_that_already_exists_succeeds_again",
        "test_empty_blob_can_be_pushed",
        "test_post_with_digest_stores_the_blob_in_one_request",
        "test_post_with_a_wrong_digest_is_digest_invalid_and_stores_nothing",
        "test_chunked_patches_with_content_range_then_put_complete_the_blob",
        "test_streamed_patch_without_content_range_appends",
        "test_put_may_carry_the_last_chunk_with_its_content_range",
        "test_out_of_order_chunk_is_416_and_keeps_the_upload",
        "test_first_chunk_not_starting_at_zero_is_416",
        "test_content_range_that_disagrees_with_content_length_is_416",
        "test_out_of_order_final_put_is_416_and_keeps_the_upload",
        "test_upload_status_is_204_with_range_location_and_uuid",
        "test_status_of_an_unknown_upload_is_404_blob_upload_unknown",
        "test_delete_cancels_the_upload_then_it_is_404_blob_upload_unknown",
        "test_digest_mismatch_is_digest_invalid_and_nothing_becomes_visible",
        "test_put_without_a_digest_is_digest_invalid_and_keeps_the_upload",
        "test_an_upload_id_from_another_repository_is_blob_upload_unknown",
        "test_sha512_chunked_upload",
        "test_sha512_monolithic_post_and_mismatch",
        "test_mount_from_a_repository_that_has_the_blob_is_201",
        "test_mount_when_the_source_lacks_the_blob_falls_back_to_a_202_upload",
        "test_mount_without_from_links_a_blob_of_a_readable_repository_else_starts_an_upload",
        "test_sha512_blob_can_be_mounted",
    ],
    blobs: [
        "test_get_blob_returns_its_bytes_with_docker_content_digest",
        "test_head_blob_gives_length_and_digest_without_a_body",
        "test_range_request_is_206_with_exactly_the_requested_bytes",
        "test_range_past_the_end_is_416_with_the_blob_size",
        "test_blobs_advertise_byte_ranges",
        "test_unknown_blob_is_404_blob_unknown",
        "test_blob_of_another_repository_is_blob_unknown_here",
        "test_blob_in_a_repository_that_does_not_exist_is_404",
        "test_delete_blob_is_202_and_then_blob_unknown",
        "test_deleting_an_unknown_blob_is_404_blob_unknown",
        "test_deleting_a_blob_in_one_repository_keeps_it_in_another",
        "test_sha512_blob_is_served_by_its_sha512_digest",
        "test_sha512_blob_can_be_deleted",
        "test_an_unfinished_upload_is_not_a_blob",
        "test_large_blob_is_served_whole_and_by_range",
    ],
    manifests: [
        "test_put_by_tag_is_201_with_location_and_docker_content_digest",
        "test_get_by_tag_and_by_digest_returns_the_pushed_bytes_and_media_type",
        "test_head_gives_media_type_digest_and_length_without_a_body",
        "test_put_by_digest_stores_an_untagged_manifest",
        "test_bytes_are_kept_exactly_as_pushed_not_reformatted",
        "test_a_manifest_without_a_media_type_field_is_served_with_the_pushed_content_type",
        "test_content_type_that_contradicts_the_media_type_is_manifest_invalid",
        "test_pushing_a_tag_again_moves_it_to_the_new_manifest",
        "test_a_manifest_is_only_visible_in_its_repository",
        "test_sha512_digest_reference_is_accepted_and_served",
        "test_if_none_match_with_the_digest_is_304",
        "test_missing_layer_is_manifest_blob_unknown",
        "test_missing_config_is_manifest_blob_unknown",
        "test_blobs_of_another_repository_do_not_count",
        "test_index_referencing_a_missing_manifest_is_manifest_blob_unknown",
        "test_non_distributable_layers_may_be_missing",
        "test_digest_reference_not_matching_the_body_is_digest_invalid",
        "test_a_manifest_whose_subject_does_not_exist_is_accepted_with_oci_subject",
        "test_an_index_with_a_subject_is_answered_with_oci_subject",
        "test_delete_by_digest_removes_the_manifest_and_all_its_tags",
        "test_delete_by_tag_removes_only_the_tag",
        "test_a_deleted_manifest_can_be_pushed_again",
        "test_deleting_an_unknown_manifest_or_tag_is_404_manifest_unknown",
        "test_deleting_a_manifest_twice_is_manifest_unknown_the_second_time",
        "test_deleting_a_manifest_in_one_repository_keeps_it_in_another",
        "test_unknown_manifest_is_404_manifest_unknown",
    ],
    listings: [
        "test_tags_list_is_sorted_and_names_the_repository",
        "test_tags_list_only_has_this_repositorys_tags",
        "test_tags_pages_with_n_and_last_follow_link_until_exhausted",
        "test_a_page_that_ends_exactly_at_the_last_tag_has_no_link",
        "test_n_larger_than_the_tag_count_returns_everything",
        "test_last_alone_returns_the_tags_after_it",
        "test_n_zero_is_an_empty_list",
        "test_tags_of_an_unknown_repository_is_404_name_unknown",
        "test_a_repository_with_only_blobs_has_no_tags_list",
        "test_an_untagged_manifest_makes_the_repository_known_with_no_tags",
        "test_deleted_tags_leave_the_list",
        "test_catalog_with_last_and_n_zero",
        "test_catalog_lists_every_repository_once_in_order",
        "test_an_empty_registry_has_an_empty_catalog",
        "test_catalog_pages_with_n_and_last_follow_link_until_exhausted",
    ],
    referrers: [
        "test_referrers_index_lists_each_referrer_with_artifact_type_and_annotations",
        "test_referrers_answer_has_the_oci_index_content_type",
        "test_artifact_type_falls_back_to_the_config_media_type",
        "test_an_empty_artifact_type_falls_back_to_the_config_media_type",
        "test_an_index_referrer_without_artifact_type_has_none_in_its_descriptor",
        "test_artifact_type_filter_keeps_only_matches_and_says_so",
        "test_a_filter_that_matches_nothing_is_an_empty_index_with_the_header",
        "test_without_a_filter_there_is_no_filters_applied_header",
        "test_referrers_pushed_before_their_subject_are_listed",
        "test_referrers_of_another_repository_are_not_listed",
        "test_a_deleted_referrer_leaves_the_index",
        "test_an_index_can_be_a_referrer",
        "test_referrers_of_a_referrer_are_its_own",
    ],
}
for _module, _names in _CORE.items():
    globals().update({name: getattr(_module, name) for name in _names})


# --- what only a replica set shows ----------------------------------------------------------------------------


async def test_a_chunked_upload_whose_patches_land_on_every_replica_completes_and_each_replica_serves_it(
        api, replica_set):
    data = random_bytes(6 * 200_000 + 17)
    location = await start_upload(api, "spread/app")
    upload_id = urlsplit(location).path.rsplit("/", 1)[1]
    for start in range(0, len(data), 200_000):
        chunk = data[start:start + 200_000]
        async with api.session.patch(location, data=chunk, headers={
                "Content-Range": f"{start}-{start + len(chunk) - 1}", "Content-Type": "application/octet-stream"}) \
                as response:
            assert response.status == 202, await response.text()
            assert response.headers["Docker-Upload-UUID"] == upload_id
            location = response.headers["Location"]
            assert location.startswith(replica_set.url)  # the balancer's address, never a replica's own
    async with api.session.put(location, params={"digest": sha256(data)}) as response:
        assert response.status == 201, await response.text()

    answered = wait_until(lambda: _settled(replica_set.replicas_answering("PATCH", upload_id), 7),
                          what="the balancer's log of the PATCHes")
    assert len(answered) == len(replica_set.replicas), answered  # round robin: every replica took some
    for replica in replica_set.replicas:  # and each one, asked directly, serves the whole blob
        with urllib.request.urlopen(f"{replica.url}/v2/spread/app/blobs/{sha256(data)}", timeout=30) as response:
            assert response.read() == data


def _settled(counts: dict[str, int], total: int) -> dict[str, int] | None:
    return counts if sum(counts.values()) == total else None
