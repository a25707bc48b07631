"""The bundle commands' arguments (issue 17): `export`, `inventory` and `import`. What they do is bundle_cli.py,
imported only when one of them runs: the bundle tools (tar streams, the bundle format) that `serve` and the other
commands never need."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _deferred(name: str) -> Callable[[argparse.Namespace], int]:
    def handler(arguments: argparse.Namespace) -> int:
        # Imported here, when a bundle command runs: tarfile and the bundle format, which `serve` never loads.
        from connected_registry import bundle_cli

        return getattr(bundle_cli, name)(arguments)

    return handler


def add_commands(commands, add_remote) -> None:
    export = commands.add_parser(
        "export", help="write a signed bundle (an OCI image layout) of an instance's content, for a site with no link",
        description="Write the content of --repository patterns (default: the instance's repositories, or with --for "
        "CHILD that child's scope) as an OCI image layout with a bundle manifest signed by the instance's key: a "
        "directory, or one tar file when --output ends in .tar. With --have FILE (the receiver's inventory) only what "
        "it lacks. From a running instance (--registry, a token that may read what is exported) or a stopped one "
        "(--data DIR). Example:  connected-registry export --data /var/acr/data --have ship.json --output ship.tar")
    export.add_argument("--output", required=True, metavar="PATH", help="a directory, or a file ending in .tar")
    export.add_argument("--repository", action="append", metavar="PATTERN", help="a name or prefix/* (repeatable)")
    export.add_argument("--for", dest="for_child", metavar="CHILD", help="the repositories CHILD activated with here")
    export.add_argument("--have", metavar="FILE", help="the receiver's inventory: leave out what it holds")
    export.add_argument("--platform", action="append", metavar="OS/ARCH[/VARIANT]", help="of an index, only the "
                        "images of these platforms (repeatable; as the `platforms` setting); the index stays whole")
    export.add_argument("--outbox", action="store_true", help="a ReadWrite child's outbox (its pushes and deletes "
                        "waiting for the parent), for the parent to import; the token needs gateway/<name>/config/read")
    export.add_argument("--public-key", metavar="FILE", help="with --data: also write the key the bundle is signed "
                        "with, for receivers that never linked (import --trust-key FILE)")
    _add_local(export)
    add_remote(export)
    export.set_defaults(handler=_deferred("cmd_export"))

    inventory = commands.add_parser(
        "inventory", help="write what an instance holds (digests, tags, cursors), for the exporting side's --have",
        description="Write a small JSON file of the manifests and blobs an instance holds in scope and the bundle "
        "cursors it imported; carry it to the exporting side for `export --have FILE`.")
    inventory.add_argument("--output", required=True, metavar="FILE")
    inventory.add_argument("--repository", action="append", metavar="PATTERN",
                           help="only these (default: the instance's scope)")
    _add_local(inventory)
    add_remote(inventory)
    inventory.set_defaults(handler=_deferred("cmd_inventory"))

    importing = commands.add_parser(
        "import", help="apply a bundle as a sync from its exporter would: verified, resumable, all or nothing",
        description="Verify BUNDLE (a directory or a tar) against the trusted key (the parent's, learned online, or "
        "--trust-key FILE) and every digest as it streams, then apply it as a sync would. Run again after a read "
        "error: it continues. Into a running instance (--registry, the operator's token) or a stopped --data DIR.")
    importing.add_argument("bundle", metavar="BUNDLE")
    importing.add_argument("--trust-key", metavar="FILE", help="the exporting instance's public key (PEM)")
    importing.add_argument("--unsigned", action="store_true",
                           help="a plain OCI layout (skopeo's oci: or oci-archive:, oras): no signature to check")
    importing.add_argument("--repository", metavar="NAME", help="with --unsigned: where the layout's images go")
    importing.add_argument("--receipt", action="store_true", help="BUNDLE is the parent's receipt of this "
                           "instance's outbox bundle: the entries it names are delivered")
    importing.add_argument("--write-receipt", metavar="FILE", help="where the receipt of an outbox bundle goes "
                           "(default: BUNDLE.receipt.jws)")
    _add_local(importing)
    add_remote(importing)
    importing.set_defaults(handler=_deferred("cmd_import"))


def _add_local(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="DIR", help="work on this data directory (no instance may run on it)")
    parser.add_argument("--config", metavar="FILE", help="with --data: the instance's desired properties (its name, "
                        "repositories and platforms)")
