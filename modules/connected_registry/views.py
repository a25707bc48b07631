"""What the command line prints: the hierarchy as a tree table that fits the terminal, the status document as a
short summary, sizes and ages people read at a glance. Pure functions over the documents of SPEC 4 and 11; what
those documents say is printed without control characters (a child's report is not trusted with the terminal)."""

from __future__ import annotations

from datetime import datetime, timezone

from connected_registry.printable import printable

SEVERITY_RANK = {"Error": 0, "Warning": 1, "Information": 2}
COLUMNS = ("NAME", "MODE", "ACTIVATION", "STATE", "LAST SYNC", "PENDING", "REJECTED", "DETAIL")
MIN_DETAIL = 16


def format_bytes(count: float | None) -> str:
    count = float(count or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def ago(value: str | None, now: datetime) -> str:
    """'12s ago', '5m ago', '3h ago', '2d ago'; 'never' without a time."""
    moment = parse_time(value)
    if moment is None:
        return "never"
    seconds = max(0, int((now - moment).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def worst_detail(details: list[dict] | None) -> str:
    """The most severe status detail, with how many more stand behind it."""
    details = sorted(details or [], key=lambda d: SEVERITY_RANK.get(d.get("severity"), 3))
    if not details:
        return ""
    first = details[0]
    more = f", +{len(details) - 1} more" if len(details) > 1 else ""
    return f"{first.get('code')} ({first.get('severity')}{more}): {first.get('description', '')}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def hierarchy_rows(node: dict, now: datetime) -> list[tuple[str, ...]]:
    """One row per registry, depth first; the root node is a status document, the others child entries."""
    rows: list[tuple[str, ...]] = []

    def state_of(entry: dict, report: dict, stale_above: bool) -> str:
        state = entry.get("connectionState") or report.get("connectionState") or "Offline"
        if state.startswith("Offline (stale since "):
            return f"STALE, silent {ago(state[len('Offline (stale since '):-1], now).removesuffix(' ago')}"
        return f"{state} (stale above)" if stale_above else state

    def add(entry: dict, report: dict, prefix: str, branch: str, stale_above: bool) -> None:
        sync = report.get("sync") or {}
        state = state_of(entry, report, stale_above)
        last_sync = "-" if report.get("parent") is None and report else ago(report.get("lastSyncTime"), now)
        rows.append((prefix + branch + str(entry.get("name") or report.get("name")),
                     str(entry.get("mode") or report.get("mode") or "?"),
                     str((entry.get("activation") or report.get("activation") or {}).get("status", "?")),
                     state, last_sync if report else "never reported",
                     str(sync.get("pendingUploads", "-")), str(sync.get("rejectedUploads", "-")),
                     worst_detail(report.get("statusDetails"))))
        children = entry.get("children") or []
        stale_here = stale_above or state.startswith("STALE")  # what is below was last heard through it
        child_prefix = prefix + ("" if not branch else ("│  " if branch == "├─ " else "   "))
        for index, child in enumerate(children):
            add(child, child.get("report") or {}, child_prefix, "└─ " if index == len(children) - 1 else "├─ ",
                stale_here)

    add(node, node, "", "", False)
    return rows


def render_hierarchy(node: dict, width: int, now: datetime | None = None) -> str:
    """The tree table, every line at most `width` characters (the detail column takes what is left)."""
    now = now or datetime.now(timezone.utc)
    rows = hierarchy_rows(printable(node), now)
    fixed = [max(len(COLUMNS[i]), *(len(row[i]) for row in rows)) for i in range(len(COLUMNS) - 1)]
    detail_width = max(width - sum(fixed) - 2 * len(fixed), MIN_DETAIL)
    lines = []
    for row in [COLUMNS, *rows]:
        cells = [cell.ljust(fixed[i]) if i < 5 else cell.rjust(fixed[i]) for i, cell in enumerate(row[:-1])]
        lines.append(_cut(("  ".join(cells) + "  " + _cut(row[-1], detail_width)).rstrip(), width))
    stale = sum(1 for row in rows if row[3].startswith("STALE"))
    unhealthy = sum(1 for row in rows if row[3].startswith("Unhealthy"))
    lines.append(_cut(f"{len(rows)} registries, {unhealthy} unhealthy, {stale} stale", width))
    return "\n".join(lines)


def render_operation(operation: dict | None, now: datetime) -> str:
    if not operation:
        return "none since start"
    done = operation.get("repositoriesDone")
    total = operation.get("repositoriesTotal")
    counts = f", {done}/{total} repositories" if total is not None else ""
    when = operation.get("finishedAt") or operation.get("startedAt")
    error = f": {operation['error']}" if operation.get("error") else ""
    return f"{operation.get('state')} {ago(when, now) if when else ''}{counts}{error}".replace("  ", " ")


def render_registry_sync(result: dict | None, now: datetime | None = None) -> str:
    """registrySyncResult in a line: 'Succeeded (ManualResync) 3s ago, last success 3s ago' (a running one: since
    its start)."""
    if not result:
        return "none yet"
    now = now or datetime.now(timezone.utc)
    state = result.get("syncState")
    moment = result.get("lastSyncStartTime") if state == "Syncing" else result.get("lastSyncEndTime")
    when = f" {ago(moment, now)}" if moment and state != "Pending" else ""
    return (f"{state} ({result.get('syncTrigger')}){when}, last success "
            f"{ago(result.get('lastSuccessfulSyncEndTime'), now)}")


def _bundle_lines(bundles: dict, now) -> list[str]:
    """The last offline bundle imported and exported (issue 17), when there was one."""
    lines = []
    last = bundles.get("lastImport")
    if last:
        what = ("a replay, nothing changed" if last.get("replay") else
                f"{last.get('images', 0)} images, {format_bytes(last.get('bytes'))} new")
        lines.append(f"  bundle in    from {last.get('from')} {ago(last.get('time'), now)}: {what}")
    last = bundles.get("lastExport")
    if last:
        lines.append(f"  bundle out   {ago(last.get('time'), now)}: {last.get('images', 0)} images, "
                     f"{format_bytes(last.get('bytes'))}{' for ' + last['for'] if last.get('for') else ''}")
    return lines


def render_status(document: dict, now: datetime | None = None) -> str:
    """The reported document (SPEC 4) as a summary a person reads in five seconds."""
    now = now or datetime.now(timezone.utc)
    document = printable(document)
    sync = document.get("sync") or {}
    parent = document.get("parent")
    activation = document.get("activation") or {}
    lines = [f"{document.get('name')}  {document.get('mode')}{'' if parent else ' (root)'}  "
             f"{activation.get('status')}  {document.get('connectionState')}",
             f"  version      {document.get('version')}, instance {activation.get('instanceId')}"]
    if parent:
        properties = parent.get("syncProperties") or {}
        window = f"window {properties['syncWindow']}" if properties.get("syncWindow") else "continuous"
        lines.append(f"  parent       {parent.get('endpoint')} ({parent.get('kind') or 'not reached yet'}), "
                     f"schedule \"{properties.get('schedule')}\", {window}")
        switch = parent.get("lastEndpointSwitch") or {}
        if parent.get("endpointInUse") not in (None, parent.get("endpoint")):  # an alternate endpoint (issue 16)
            lines.append(f"  in use       {parent['endpointInUse']} ({ago(switch.get('time'), now)}: "
                         f"{switch.get('reason')})")
        lines.extend(_bandwidth_line(parent.get("bandwidth")))
        lines.append(f"  last sync    {document.get('lastSyncTime') or 'never'} ({ago(document.get('lastSyncTime'), now)})")
        if sync.get("nextWindowEnd"):  # continuous sync has a start and no end: nothing to say
            lines.append(f"  window       {sync.get('nextWindowStart')} to {sync.get('nextWindowEnd')}")
    else:
        lines.append("  parent       none: this is a root")
    lines.append(f"  content      {sync.get('repositories', 0)} repositories; "
                 f"{format_bytes(sync.get('bytesDownloaded'))} downloaded, {format_bytes(sync.get('bytesUploaded'))} "
                 f"uploaded; {sync.get('runs', 0)} syncs, {sync.get('errors', 0)} failed")
    platforms = sync.get("platforms") or {}
    if platforms.get("synced"):
        lines.append(f"  platforms    {', '.join(platforms['synced'])} only: {platforms.get('manifestsLeftOut', 0)} "
                     f"manifests left out, {format_bytes(platforms.get('bytesSaved'))} not downloaded")
    lines.append(f"  uploads      {sync.get('pendingUploads', 0)} pending, {sync.get('rejectedUploads', 0)} rejected"
                 + ("  (see `connected-registry outbox list`)" if sync.get("rejectedUploads") else ""))
    if parent:
        lines.append(f"  sync-now     {render_operation(sync.get('operation'), now)}")
        lines.append(f"  registry     {render_registry_sync(document.get('registrySyncResult'), now)}")
    gc = (document.get("garbageCollection") or {}).get("lastRun")
    if gc:
        freed = (f": {gc.get('blobsRemoved', 0)} blobs ({format_bytes(gc.get('bytesFreed'))}), "
                 f"{gc.get('manifestsRemoved', 0)} manifests, {gc.get('uploadsRemoved', 0)} uploads removed"
                 if gc.get("state") == "Succeeded" else f": {gc.get('error')}" if gc.get("error") else "")
        lines.append(f"  gc           {gc.get('state')} {ago(gc.get('finishedAt') or gc.get('startedAt'), now)}{freed}")
    lines += _bundle_lines(document.get("bundles") or {}, now)
    cache = document.get("cache")
    if isinstance(cache, dict) and cache:
        lines.append("  cache        " + ", ".join(f"{key} {format_bytes(value) if 'bytes' in key.lower() else value}"
                                                   for key, value in cache.items() if not isinstance(value, dict)))
    details = sorted(document.get("statusDetails") or [], key=lambda d: SEVERITY_RANK.get(d.get("severity"), 3))
    if details:
        lines.append(f"  details      {len(details)}:")
        for detail in details:
            lines.append(f"    {detail.get('severity', ''):<11} {detail.get('code')} ({detail.get('type')}, "
                         f"{ago(detail.get('timestamp'), now)})")
            lines.append(f"      {detail.get('description')}")
    else:
        lines.append("  details      none: nothing is wrong")
    return "\n".join(lines)


def _bandwidth_line(bandwidth: dict | None) -> list[str]:
    """The parent link's budget (issue 16), when one is set: the limit now, what is used, what moved."""
    if not bandwidth or not (bandwidth.get("maxBytesPerSecond") or bandwidth.get("windows")):
        return []
    limit = bandwidth.get("effective")
    windows = len(bandwidth.get("windows") or [])
    return [f"  bandwidth    {f'{format_bytes(limit)}/s' if limit else 'unlimited'} now"
            + (f" ({windows} window{'s' if windows > 1 else ''})" if windows else "")
            + f", using {format_bytes(bandwidth.get('currentBytesPerSecond'))}/s; "
              f"{format_bytes(bandwidth.get('bytesReceived'))} received, {format_bytes(bandwidth.get('bytesSent'))} sent"]


def gc_summary(result: dict) -> str:
    result = printable(result)

    def get(key: str) -> int:  # the offline report is snake_case, the status document camelCase
        camel = key.split("_")[0] + "".join(part.title() for part in key.split("_")[1:])
        return result.get(key, result.get(camel, 0)) or 0

    return (f"{get('blobs_removed')} blobs ({format_bytes(get('bytes_freed'))}), {get('manifests_removed')} "
            f"manifests, {get('uploads_removed')} abandoned uploads and {get('stray_files_removed')} stray files removed")
