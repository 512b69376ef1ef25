"""Folder peers: a local directory as a source and as a target; unreachable while the directory is moved away."""
import os
from contextlib import contextmanager

from contract.peer import Peer, move_away, peer
from filesync.devices import create_source, create_target


@peer("folder")
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
