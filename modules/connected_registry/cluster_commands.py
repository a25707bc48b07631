"""`connected-registry cluster status` (issue 18): the replicas sharing one PostgreSQL metadata database, when each
started and was last seen, the leases each holds (storage/coordination.py) and the backends. Read from the database
itself, so it answers also when no replica does."""

from __future__ import annotations

import argparse
import json
import time

from connected_registry.storage.backends import cluster_status
from connected_registry.storage.coordination import LEASES
from connected_registry.timefmt import utc_timestamp

STALE_SECONDS = 15.0  # a replica's heartbeat is every 2 s


def cmd_cluster_status(arguments: argparse.Namespace) -> int:
    metadata, replicas = cluster_status(arguments.metadata)
    now = time.time()
    holders = {lease: replica.replica for replica in replicas for lease in replica.leases}
    document = {
        "metadata": metadata,
        "replicas": [{"replica": replica.replica, "address": replica.address, "blobStore": replica.blob_store,
                      "started": utc_timestamp(replica.started), "lastSeen": utc_timestamp(replica.last_seen),
                      "stale": now - replica.last_seen > STALE_SECONDS, "leases": replica.leases}
                     for replica in replicas],
        "leases": {lease: holders.get(lease) for lease in LEASES},
    }
    if arguments.json:
        print(json.dumps(document, indent=2))
        return 0
    print(f"metadata: {metadata}")
    print(f"{'REPLICA':<34} {'ADDRESS':<22} {'BLOB STORE':<24} {'LAST SEEN':>9}  LEASES")
    for replica in replicas:
        seen = f"{now - replica.last_seen:.0f}s ago" + (" STALE" if now - replica.last_seen > STALE_SECONDS else "")
        print(f"{replica.replica:<34} {replica.address:<22} {replica.blob_store:<24} {seen:>9}  "
              f"{', '.join(replica.leases) or '-'}")
    free = [lease for lease in LEASES if holders.get(lease) is None]
    print(f"{len(replicas)} replicas; leases no replica holds: {', '.join(free) or 'none'}"
          + (" (a root has no sync; without a twin or --config nothing reports)" if free else ""))
    return 0


def add_commands(commands) -> None:
    cluster = commands.add_parser("cluster", help="the replicas of a registry that share PostgreSQL").add_subparsers(
        dest="cluster_command", required=True, metavar="COMMAND")
    status = cluster.add_parser(
        "status", help="the replicas, who holds which lease, the backends",
        description="The replicas registered in the shared metadata database (each writes a heartbeat every 2 s; one "
        f"silent for {STALE_SECONDS:.0f} s is STALE), the leases each holds (the sync with the parent and its outbox, "
        "the garbage collection schedule, event retention, the twin reporter) and the backends. Example:  "
        "connected-registry cluster status --metadata postgresql://registry@db:5432/registry")
    status.add_argument("--metadata", metavar="DSN", help="the PostgreSQL DSN the replicas run with "
                        "(default: ACR_REGISTRY_METADATA_DSN)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(handler=cmd_cluster_status)
