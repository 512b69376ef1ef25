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
