"""Folder peers: a local directory as a source and as a target; unreachable while the directory is moved away."""
import inspect
import os
from contextlib import contextmanager

from contract.peer import Peer, move_away, peer
from filesync.devices import create_source, create_target


def folder_pending():
    """Until the folder devices speak the new interface (publish(path, size, replace)), their failures are expected."""
    from filesync.devices.folder import FolderTarget
    return "" if "replace" in inspect.signature(FolderTarget.publish).parameters else "folder not ported yet"


@peer("folder", pending=folder_pending)
@contextmanager
def folder(directory):
    storage = os.path.join(directory, "files")
    os.makedirs(storage)
    stop, start = move_away(storage)
    yield Peer(storage=storage, stop=stop, start=start,
               new_source=lambda **extra: create_source("peer", {"kind": "folder", "path": storage, "min_age": 0,
                                                                  **extra}),
               new_target=lambda **extra: create_target("peer", {"kind": "folder", "path": storage, **extra}),
               expect={"start_over": False, "non_utf8": True})
