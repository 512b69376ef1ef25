"""The drive peer: a real exFAT drive (an image on a loop device, mounted with exfat-fuse as an automounter would;
support/exfat_drive.py) as a `drive` source and a `drive` target. Unreachable while pulled out (the FUSE mount ended,
the loop device detached); start() plugs it in and mounts it again at the same place.

The drive source names files <uuid>/<path on the drive> (two drives never mix); the source below takes that prefix
off and puts it back, so the suite's names apply. Everything else is the real device. exFAT cannot hold some names
(control characters, bytes that are not UTF-8: exfat-fuse refuses them): a test that needs one is skipped with that
reason, since no drive can hold such a file for the source to list.
"""
import os
from contextlib import contextmanager

import pytest

from contract.peer import Peer, peer
from filesync.devices import create_source, create_target
from filesync.devices.base import RemoteFile
from support.exfat_drive import exfat_drive, missing_tools, unavailable_reason, unique_label, unique_serial


def drive_pending():
    """Why exFAT drives cannot be made here, or ''."""
    reason = unavailable_reason()
    missing = missing_tools()
    return reason or (f"install the Debian packages {' '.join(missing)}" if missing else "")


class WithoutUuid:
    """A drive source whose paths lose their '<uuid>/' prefix (see the module text); the rest is passed through."""

    def __init__(self, source, uuid):
        self._source, self._prefix = source, uuid + "/"

    def __getattr__(self, name):
        return getattr(self._source, name)

    def list(self):
        found = []
        for entry in self._source.list():
            assert entry.path.startswith(self._prefix), entry.path
            found.append(RemoteFile(entry.path[len(self._prefix):], entry.size, entry.mtime, entry.complete,
                                    entry.problem))
        return found

    def stat(self, path):
        entry = self._source.stat(self._prefix + path)
        return RemoteFile(path, entry.size, entry.mtime, entry.complete, entry.problem)

    def read(self, path, offset):
        return self._source.read(self._prefix + path, offset)

    def checksum(self, path):
        return self._source.checksum(self._prefix + path)

    def delete(self, path):
        return self._source.delete(self._prefix + path)


class DrivePeer(Peer):
    """A Peer whose storage is the drive's mount point."""

    def put(self, name, data):
        try:
            super().put(name, data)
        except OSError as error:  # exfat-fuse refuses the name itself: no drive can hold this file
            pytest.skip(f"exFAT cannot hold the name {name!r} ({error.strerror})")


@peer("drive-exfat", pending=drive_pending)
@contextmanager
def drive_exfat(directory):
    os.makedirs(directory)
    with exfat_drive(directory, unique_label(), unique_serial()) as drive:
        drive.attach()
        storage = os.path.join(directory, "media")
        drive.mount(storage)

        def start():
            drive.attach()
            drive.mount(storage)
        options = {"kind": "drive", "uuid": drive.uuid}
        yield DrivePeer(storage=storage, stop=lambda: drive.unplug(storage), start=start,
                        new_source=lambda **extra: WithoutUuid(create_source("peer", {**options, **extra}),
                                                               drive.uuid),
                        new_target=lambda **extra: create_target("peer", {**options, **extra}),
                        expect={"digests": ("sha256",), "checksum": False, "start_over": False, "non_utf8": False})
