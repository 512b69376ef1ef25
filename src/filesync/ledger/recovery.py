"""Opening the ledger when its file may be damaged, and rebuilding what it knew.

Only a damaged database (SQLite CORRUPT or NOTADB, or a failed quick_check) is moved aside (with its -wal and -shm
files), never deleted, and a new one is rebuilt from staging: every staged version, described by the <id>.json that
the downloader wrote and fsynced before giving the staged file its name, is recorded as downloaded under its old id.
A database that is locked, read-only or on a full disk is not damaged: open_ledger raises LedgerUnavailable and the
caller waits (wait_for_ledger). Each upload, once the ledger recorded it, is added to the <id>.json too, so a rebuilt
ledger knows it as done: a target that cannot be asked what it holds (Flight Review, an HTTP API) is not sent the
version again. Where that note is missing (a crash between the two), the engine checks a target's final name before
uploading, so nothing published to a target that can be checked is sent again.
"""
import json
import logging
import os
import threading
import time

from filesync.fsutil import fsync_directory
from filesync.ledger.store import Ledger, LedgerCorrupt, LedgerUnavailable
from filesync.paths import PART_SUFFIX, staged_path

log = logging.getLogger(__name__)
META_SUFFIX = ".json"
META_TEMPORARY = META_SUFFIX + ".tmp"  # an <id>.json being replaced
# the upload workers of one process (one per target) update one version's <id>.json in turn
_META_UPDATES = threading.Lock()


def open_ledger(path, **kwargs):
    """Open the ledger at `path`; if it is damaged, move it aside and start a new one.

    Returns (ledger, moved_aside_path or None). Raises LedgerUnavailable when it cannot be opened now.
    """
    try:
        return Ledger(path, **kwargs), None
    except LedgerCorrupt as error:
        aside = f"{path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.replace(path + suffix, aside + suffix)
        log.error("ledger %s is damaged (%s); moved it to %s and starting a new one", path, error, aside)
        return Ledger(path, **kwargs), aside


def wait_for_ledger(path, stopped=lambda: False, report=lambda reason: None, interval=5.0, **kwargs):
    """open_ledger, waiting while the database cannot be opened (locked, read-only, full); report(reason) says why.

    Returns (ledger, moved_aside) or (None, None) when stopped() turned true first.
    """
    while not stopped():
        try:
            return open_ledger(path, **kwargs)
        except LedgerUnavailable as error:
            log.error("%s; waiting", error)
            report(str(error))
            time.sleep(interval)
    return None, None


def _write_meta(final_path, meta, sync_folder=True):
    """Write <id>.json whole: a temporary file, fsync, rename, fsync of the folder (`sync_folder` False: the caller
    fsyncs it, after renaming more into it, before anything relies on the name); a crash or a power cut leaves the
    old description or the new."""
    temporary = final_path + META_TEMPORARY
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(meta))  # one write: json.dump() writes each token on its own
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, final_path + META_SUFFIX)
    if sync_folder:
        fsync_directory(os.path.dirname(final_path))


def write_staged_meta(final_path, record, sha256, checksum, sync_folder=True):
    """Describe a staged version beside it (<id>.json, fsynced) so a rebuilt ledger knows it again. `sync_folder`
    False leaves the folder's fsync, which makes the name durable, to the caller."""
    meta = {"id": record.id, "source": record.source, "path": record.path, "version": record.version,
            "size": record.size, "mtime": record.mtime, "sha256": sha256, "checksum": checksum}
    _write_meta(final_path, meta, sync_folder)


def record_delivery(final_path, target, location):
    """Add `target` (and where the version landed there) to the staged version's <id>.json, after the ledger recorded
    the upload: a ledger rebuilt from staging then does not send it again (Flight Review or an HTTP API cannot be
    asked whether they hold it)."""
    with _META_UPDATES:
        meta = read_staged_meta(final_path)
        if meta is None:  # released meanwhile (retention) or never described: nothing to rebuild from
            return False
        meta.setdefault("delivered", {})[target] = location
        _write_meta(final_path, meta)
    return True


def read_staged_meta(final_path):
    """The description of a staged version, or None when there is none (or it cannot be read)."""
    try:
        with open(final_path + META_SUFFIX, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def discard_staged(staging_dir, record):
    """Remove whatever staging holds of version `record` (its copy, .part, <id>.json and its .tmp); True if a copy was
    there. For a version the ledger no longer keeps (`filesync forget`): left behind, it would fill staging and come
    back with a ledger rebuilt from staging."""
    final = staged_path(staging_dir, record.source, record.id)
    removed = False
    for path in (final, final + PART_SUFFIX, final + META_SUFFIX, final + META_TEMPORARY):
        try:
            os.remove(path)
            removed = removed or path == final
        except FileNotFoundError:
            pass
    return removed


def rebuild_from_staging(ledger, config):
    """Record every complete staged version as downloaded for its pipeline's targets. Returns how many."""
    count = 0
    for pipeline in config.pipelines:
        root = os.path.join(config.staging_dir, pipeline.source)
        try:
            names = os.listdir(root)
        except FileNotFoundError:
            continue
        for name in names:
            if not name.isdigit():
                continue
            meta = read_staged_meta(os.path.join(root, name))
            if meta is None or meta.get("id") != int(name) or meta.get("source") != pipeline.source:
                log.warning("staged file %s has no readable description; left alone", os.path.join(root, name))
                continue
            if ledger.register_staged(meta["id"], pipeline.source, pipeline.targets, pipeline.delete_after_upload,
                                      meta["path"], meta["version"], meta["size"], meta["mtime"], meta["sha256"],
                                      meta.get("checksum", ""), meta.get("delivered")):
                count += 1
    log.info("rebuilt %d staged files into the new ledger", count)
    return count
