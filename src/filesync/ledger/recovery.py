"""Opening the ledger when its file may be damaged, and rebuilding what it knew.

A database that SQLite cannot read is moved aside (with its -wal and -shm files), never deleted, and a new one is
rebuilt from staging: every staged file is recorded as downloaded. What the targets already hold needs no record:
each target checks its final name before uploading (Target.published), so nothing published is sent again.
"""
import logging
import os
import sqlite3
import time

from filesync.ledger.store import UNKNOWN_MTIME, Ledger
from filesync.paths import PART_SUFFIX, staged_path

log = logging.getLogger(__name__)


def open_ledger(path, **kwargs):
    """Open the ledger at `path`; if it is corrupt or unreadable, move it aside and start a new one.

    Returns (ledger, moved_aside_path or None).
    """
    try:
        return Ledger(path, **kwargs), None
    except sqlite3.DatabaseError as error:
        aside = f"{path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.replace(path + suffix, aside + suffix)
        log.error("ledger %s is unreadable (%s); moved it to %s and starting a new one", path, error, aside)
        return Ledger(path, **kwargs), aside


def rebuild_from_staging(ledger, config):
    """Record every complete file in staging as downloaded for its pipeline's targets. Returns how many."""
    count = 0
    for pipeline in config.pipelines:
        root = staged_path(config.staging_dir, pipeline.source, "")
        entries = []
        for directory, _, names in os.walk(root):
            for name in names:
                if name.endswith(PART_SUFFIX):
                    continue
                full = os.path.join(directory, name)
                entries.append((os.path.relpath(full, root).replace(os.sep, "/"), os.path.getsize(full),
                                UNKNOWN_MTIME))
        ledger.register(pipeline.source, pipeline.targets, pipeline.delete_after_upload, entries, downloaded=True)
        count += len(entries)
    log.info("rebuilt %d staged files into the new ledger", count)
    return count
