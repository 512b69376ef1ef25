"""The two small interfaces every device implements: Source (where files come from) and Target (where they go).

A device module holds one class; filesync.devices maps a config `kind` to it. Devices raise the errors of
filesync.errors so the engine knows whether to wait, retry or park. Paths given to devices are relative,
'/'-separated and already checked by filesync.paths.
"""
import hashlib
import zlib
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional

from filesync.errors import PermanentError
from filesync.options import parse_options


@dataclass(frozen=True)
class RemoteFile:
    """A file as a source lists it. `complete` is False while the device knows it is still being written."""
    path: str
    size: int
    mtime: float
    complete: bool = True


@dataclass(frozen=True)
class Checksum:
    """A digest the source computed itself, to compare with the staged copy."""
    algorithm: str
    value: int | str


def mavftp_crc32(data: bytes, crc: int = 0) -> int:
    """MAVLink FTP's CalcFileCRC32: reflected CRC-32 started at 0 with no final XOR (FACTS.md).

    Chainable: pass the previous result as `crc`.
    """
    return zlib.crc32(data, crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def local_checksum(path: str, algorithm: str) -> int | str:
    """Compute `algorithm` ('sha256', 'crc32' or 'mavftp-crc32') over a local file, reading it in 1 MiB blocks."""
    if algorithm == "sha256":
        digest = hashlib.sha256()
        update = digest.update
        result = digest.hexdigest
    elif algorithm in ("crc32", "mavftp-crc32"):
        state = [0]
        chain = zlib.crc32 if algorithm == "crc32" else mavftp_crc32
        update = lambda block: state.__setitem__(0, chain(block, state[0]))  # noqa: E731
        result = lambda: state[0]  # noqa: E731
    else:
        raise PermanentError(f"unknown checksum algorithm {algorithm!r}")
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            update(block)
    return result()


@dataclass
class DeviceContext:
    """What a device may use besides its options: the lease client for one-session devices and who it acts for."""
    lock: object = None  # acquire/release like filesync.lock.LeaseTable; None: the device needs no lease
    owner: str = "filesync"  # the lease owner name, unique per process (the ROS node name)


class Device:
    """What sources and targets share: a name, validated options and a close()."""

    kind = ""
    OPTIONS: List = []

    def __init__(self, name: str, raw_options: dict, key: str, context=None):
        self.name = name
        self.key = key
        self.options = parse_options(self.OPTIONS, raw_options, key, ignore=("kind",))
        self.context = context

    def probe(self) -> None:
        """A cheap check that the device answers; raises DeviceUnavailable when it does not. Used while it is down."""

    def close(self) -> None:
        """Release connections; the device may be used again afterwards (it reconnects)."""


class Source(Device):
    """Where files come from."""

    def list(self) -> Iterator[RemoteFile]:
        """Every file the source holds now, recursively. Raises DeviceUnavailable when it cannot be reached."""
        raise NotImplementedError

    def stat(self, path: str) -> RemoteFile:
        """The file's current size and time; raises PermanentError if it no longer exists."""
        raise NotImplementedError

    def read(self, path: str, offset: int) -> Iterator[bytes]:
        """Yield the file's bytes from `offset` to its end. The engine closes the iterator when it stops early."""
        raise NotImplementedError

    def checksum(self, path: str) -> Optional[Checksum]:
        """A digest the device computes itself, or None where it offers none."""
        return None

    def delete(self, path: str) -> None:
        """Remove the file from the source; called only after every target verified it."""
        raise PermanentError(f"source {self.name} ({self.kind}) cannot delete files")


class Target(Device):
    """Where files go. Uploads land under a temporary name and become visible only by publish()."""

    resumable = True

    def published(self, path: str, local_path: str, size: int) -> Optional[str]:
        """If the final name already holds exactly this content, its location (URL or path); else None.

        This makes an upload idempotent: a crash between publish and the ledger's record costs no second copy.
        """
        return None

    def held(self, path: str) -> int:
        """How many bytes of an unfinished upload of `path` the target holds (0 when none)."""
        return 0

    def discard(self, path: str) -> None:
        """Drop an unfinished upload that cannot be resumed (larger than the file)."""

    def write(self, path: str, stream, offset: int, size: int, progress: Callable[[int], None]) -> None:
        """Send `stream` (a binary file positioned at `offset`) to the temporary name, calling progress(bytes_done)."""
        raise NotImplementedError

    def publish(self, path: str, local_path: str, size: int) -> str:
        """Verify the uploaded bytes and give them their final name; return the location (URL or path)."""
        raise NotImplementedError

    def delete(self, path: str) -> None:
        """Remove a published file."""
        raise PermanentError(f"target {self.name} ({self.kind}) cannot delete files")
