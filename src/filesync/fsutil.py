"""Durable directory entries. fsync of a file makes its bytes durable, not its name: a power cut can lose the entry
of a file just created or renamed, or of a folder just made, unless the folder holding the entry is fsynced too."""
import os


def fsync_directory(path: str) -> None:
    """fsync the directory `path`, making the entries created, renamed or removed in it durable."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def make_directories(path: str) -> None:
    """os.makedirs(path, exist_ok=True), then fsync the parent of every folder it created, top down, so that none of
    them (nor what is written into them afterwards) can be lost in a power cut. Nothing is synced when all existed."""
    missing = []
    folder = os.path.abspath(path)
    while not os.path.isdir(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    if not missing:
        return
    os.makedirs(path, exist_ok=True)
    for created in reversed(missing):
        fsync_directory(os.path.dirname(created))


class FolderSyncs:
    """Folder fsyncs (fsync_directory) made at once, or, between hold() and settle(), once per folder at settle(): a
    batch of files landing in one folder makes their names durable with one fsync, before any of them is recorded."""

    def __init__(self):
        self._held = None  # folders to fsync at settle(); None: sync() fsyncs at once

    def hold(self) -> None:
        """From now until settle(), sync() only notes its folder."""
        if self._held is None:
            self._held = set()

    def sync(self, path: str) -> None:
        """Make the entries of folder `path` durable: now, or at settle() while held."""
        if self._held is None:
            fsync_directory(path)
        else:
            self._held.add(path)

    def settle(self) -> None:
        """fsync each folder noted since hold() once; sync() fsyncs at once again (also when one of them fails)."""
        held, self._held = self._held or set(), None
        for path in sorted(held):
            fsync_directory(path)
