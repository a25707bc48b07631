"""A child that never had a link reaches the state of one synced over the network through signed bundles: export at
the root, inventory at the child, export --have (a delta), import into its stopped data directory and then into it
running, through its control API (issue 17)."""

from __future__ import annotations

import json
import tarfile

import pytest

from tests.bundles.bundle_api import (bundle_site, cli, delete_tag, events_of, export_from, import_into, inventory_of,
                                      layer_of, push_image, state_of)
from tests.support.http import request
from tests.support.oci import sha256
from tests.support.processes import wait_until
from tests.sync.hierarchy import OPERATOR, READER, start_instance
from tests.sync.instance_api import digest_at, outbox, status_of


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with bundle_site(tmp_path_factory.mktemp("rounds")) as site:
        yield site


def test_a_never_linked_child_reaches_the_networked_childs_state_by_bundles(site):
    root, online, base = site.root, site.online, site.base
    app1 = push_image(root, "factory/app", "1.0", layer_size=1 << 20)
    lib1 = push_image(root, "factory/lib", "1.0", layer_size=256 << 10)
    offline_data, offline_config = site.offline_data, site.offline_config

    # Round 1: an empty inventory, the whole scope, into the stopped data directory.
    inventory_of(base / "inventory-0.json", "--data", str(offline_data), "--config", str(offline_config))
    first = export_from(root, base / "round-1.tar", "--have", str(base / "inventory-0.json"))
    imported = import_into(base / "round-1.tar", "--data", str(offline_data), "--config", str(offline_config),
                           "--trust-key", str(site.root_key))
    assert "imported 2 images of 2 repositories" in imported.stdout, imported.stdout
    assert "imported factory/app:1.0 " + app1 in imported.stdout  # a line per image off a terminal

    # Meanwhile the root moves on: a new tag sharing the 1 MiB layer, and a tag deleted.
    app2 = push_image(root, "factory/app", "2.0", layer_size=1 << 20)
    delete_tag(root, "factory/lib", "1.0")
    wait_until(lambda: digest_at(online, "factory/app", "2.0") == app2 and
               digest_at(online, "factory/lib", "1.0") is None, what="the networked child to follow the root")
    assert digest_at(online, "factory/app", "1.0") == app1 and lib1

    # Round 2: the child's inventory, a delta, into the child running (control API, operator's token).
    inventory_of(base / "inventory-1.json", "--data", str(offline_data), "--config", str(offline_config))
    second = export_from(root, base / "round-2.tar", "--have", str(base / "inventory-1.json"))
    carried = set(tarfile.open(base / "round-2.tar").getnames())
    assert f"blobs/sha256/{sha256(layer_of('factory/app', 1 << 20)).split(':')[1]}" not in carried  # held there
    assert second.bytes < 16 << 10 < first.bytes, (first, second)
    offline = site.start_offline()
    imported = import_into(base / "round-2.tar", "--registry", offline.url, "--username", OPERATOR[0],
                           "--password", OPERATOR[1], "--trust-key", str(site.root_key))
    assert "imported 2 images of 2 repositories" in imported.stdout, imported.stdout  # factory/lib has none left

    assert state_of(offline) == state_of(online) == {"factory/app": {"1.0": app1, "2.0": app2}}
    # The networked child learned its parent's key at activation: no --trust-key, and the same bundle changes nothing.
    again = import_into(base / "round-2.tar", "--registry", online.url, "--username", OPERATOR[0], "--password",
                        OPERATOR[1])
    assert "imported 2 images" in again.stdout or "nothing was changed" in again.stdout, again.stdout
    offline.stop()
    online.stop()
    assert events_of(offline.process.data_dir) == events_of(online.process.data_dir)


def test_a_readwrite_childs_outbox_reaches_the_parent_by_bundle_and_empties(site):
    """Up by bundle; delivered by the parent's receipt (`import --receipt`), or by a bundle from the parent that
    shows the content there."""
    root, base = site.root, site.base
    writer = start_instance(base, "bundle-writer", parent=site.unreachable_parent, mode="ReadWrite",
                            repositories=["factory/*"])
    site.started.append(writer)
    operator = ("--username", OPERATOR[0], "--password", OPERATOR[1])
    writer_key = base / "writer.pem"
    writer_key.write_text(request(f"{writer.url}/acr/connected/v1/info").json()["bundleKey"])
    pushed = {}
    for number, tag in enumerate(("1.0", "2.0")):
        pushed[tag] = push_image(writer, "factory/edge", tag)
        cli("export", "--outbox", "--registry", writer.url, *operator, "--output", str(base / f"outbox-{number}.tar"))
        imported = import_into(base / f"outbox-{number}.tar", "--registry", root.url, *operator,
                               "--trust-key", str(writer_key))
        assert "the receipt is in" in imported.stdout and digest_at(root, "factory/edge", tag) == pushed[tag]
    assert len(json.loads(outbox(writer, "list", "--json").stdout)) == 2  # none delivered while nothing came back
    refused = import_into(base / "outbox-0.tar", "--data", str(base / "read-only"), "--config",
                          str(site.offline_config), "--trust-key", str(writer_key), expect=1)
    assert "this instance is ReadOnly: it takes no pushes" in refused.stderr, refused.stderr

    receipt = cli("import", "--receipt", str(base / "outbox-0.tar.receipt.jws"), "--registry", writer.url, *operator,
                  "--trust-key", str(site.root_key))
    assert "1 outbox entries are delivered" in receipt.stdout, receipt.stdout
    assert [entry["tag"] for entry in json.loads(outbox(writer, "list", "--json").stdout)] == ["2.0"]

    export_from(root, base / "from-root.tar")
    seen = import_into(base / "from-root.tar", "--registry", writer.url, *operator, "--trust-key", str(site.root_key))
    assert "1 outbox entries are delivered" in seen.stdout, seen.stdout
    assert json.loads(outbox(writer, "list", "--json").stdout) == []
    assert state_of(writer)["factory/edge"] == pushed


def test_a_parent_trusts_the_outbox_of_a_child_that_activated_once_and_only_its_outbox(site):
    root, base = site.root, site.base
    operator = ("--username", OPERATOR[0], "--password", OPERATOR[1])
    linked = start_instance(base, "bundle-linked", parent=root, mode="ReadWrite", repositories=["factory/*"])
    site.started.append(linked)
    wait_until(lambda: status_of(linked)["activation"]["status"] == "Active", what="the child's activation")
    linked.document["parent"]["endpoint"] = site.unreachable_parent.url  # from now on, no link at all
    linked.write_config()
    linked.process.restart()
    pushed = push_image(linked, "factory/linked", "1.0")

    cli("export", "--outbox", "--registry", linked.url, *operator, "--output", str(base / "linked-outbox.tar"))
    imported = import_into(base / "linked-outbox.tar", "--registry", root.url, *operator)  # no --trust-key
    assert "imported 1 images" in imported.stdout, imported.stdout
    assert digest_at(root, "factory/linked", "1.0") == pushed

    cli("export", "--registry", linked.url, "--username", READER[0], "--password", READER[1], "--output",
        str(base / "linked-content.tar"))
    refused = import_into(base / "linked-content.tar", "--registry", root.url, *operator, expect=1)
    assert "trusted only for its own outbox" in refused.stderr, refused.stderr
