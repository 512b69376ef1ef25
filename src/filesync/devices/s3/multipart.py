"""The bookkeeping of an S3 multipart upload, apart from the requests (target.py sends them): the part size, the
device's own list of the parts the store confirmed (the resume note), the staged file read at given offsets and the
windows of it sent as part bodies, and the checksums and ETags a multipart object must have."""
import base64
import hashlib
import json
import math
import os
import re
import threading
from dataclasses import dataclass, field
from typing import List

from filesync.errors import FileError

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB  # S3's smallest part (but the last); SeaweedFS enforces it too (EntityTooSmall)
MAX_PART_SIZE = 5 * 1024 * MIB
MAX_PARTS = 10_000
MAX_PUT_SIZE = 5 * 1024 * MIB  # the largest single PutObject
# Parts chosen from the size: 8 MiB, larger for files over ~8 GB so that an upload has at most 1,000 parts: the note
# (about 90 bytes a part) is written to the ledger after every part and should stay short.
DEFAULT_PART_SIZE = 8 * MIB
PREFERRED_MAX_PARTS = 1000
READ_BLOCK = MIB  # local reads for hashing and sending


def part_size_check(value):
    """Check of the part_size option: 0, or a size S3 takes for a part."""
    if value and not MIN_PART_SIZE <= value <= MAX_PART_SIZE:
        return f"must be 0 (chosen from the file size) or from {MIN_PART_SIZE} (5 MiB) to {MAX_PART_SIZE} (5 GiB)"
    return None


def threshold_check(value):
    """Check of the multipart_threshold option: at most what one PutObject takes."""
    if not 0 < value <= MAX_PUT_SIZE:
        return f"must be above 0 and at most {MAX_PUT_SIZE} (5 GiB, the largest single upload)"
    return None


def choose_part_size(size, configured=0):
    """The part size for a file of `size` bytes: `configured` (0: 8 MiB, more above ~8 GB to keep to 1,000 parts),
    raised where needed so that no upload has more than S3's 10,000 parts; whole MiB, at least 5 MiB."""
    wanted = configured or max(DEFAULT_PART_SIZE, math.ceil(size / PREFERRED_MAX_PARTS))
    wanted = max(wanted, math.ceil(size / MAX_PARTS), MIN_PART_SIZE)
    return min(math.ceil(wanted / MIB) * MIB, MAX_PART_SIZE)


def b64(digest: bytes) -> str:
    """A digest as S3 writes it in checksum headers: base64."""
    return base64.b64encode(digest).decode("ascii")


def composite_checksum(part_checksums):
    """S3's checksum of a multipart object: SHA-256 over the parts' raw SHA-256s, then "-<number of parts>"."""
    combined = hashlib.sha256(b"".join(base64.b64decode(value) for value in part_checksums))
    return f"{b64(combined.digest())}-{len(part_checksums)}"


def multipart_etag(part_etags):
    """S3's ETag of a multipart object whose parts have these ETags (each its part's MD5): the MD5 of the parts' raw
    MD5s, then "-<number of parts>"; '' where a part's ETag is not an MD5."""
    if not all(re.fullmatch(r"[0-9a-f]{32}", etag) for etag in part_etags):
        return ""
    combined = hashlib.md5(b"".join(bytes.fromhex(etag) for etag in part_etags), usedforsecurity=False)
    return f"{combined.hexdigest()}-{len(part_etags)}"


class Staged:
    """Reads the staged file at given offsets: os.pread where it has a descriptor (the engine's stream stays where it
    is, and a local read costs little next to the network), else seek and read."""

    def __init__(self, stream=None, fd=None, data=None):
        self.stream, self.fd, self.data = stream, fd, data
        self._owns_fd = fd is not None
        if stream is not None:
            try:
                self.fd = stream.fileno()
            except (AttributeError, OSError, ValueError):
                self.fd = None
        self._lock = threading.Lock()

    def read_at(self, offset, length):
        """Up to `length` bytes from `offset` (fewer only at the end of the file)."""
        if self.data is not None:
            return self.data[offset:offset + length]
        if self.fd is not None:
            return os.pread(self.fd, length, offset)
        with self._lock:
            self.stream.seek(offset)
            return self.stream.read(length)

    def sha256(self, start, length, also=None):
        """SHA-256 of bytes [start, start + length), and `also` (another hash object) fed the same bytes in the same
        pass; FileError if the file ends before."""
        digest = hashlib.sha256()
        position, end = start, start + length
        while position < end:
            block = self.read_at(position, min(READ_BLOCK, end - position))
            if not block:
                raise FileError(f"the staged file ended at byte {position}, expected {end}")
            digest.update(block)
            if also is not None:
                also.update(block)
            position += len(block)
        return digest

    def kept(self, size):
        """A copy that stays readable after the engine closes its stream: a duplicate descriptor, or the bytes."""
        if self.fd is not None:
            return Staged(fd=os.dup(self.fd))
        return Staged(data=self.read_at(0, size))

    def close(self):
        """Close a duplicated descriptor (the engine's own stream is the engine's)."""
        if self._owns_fd and self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Window:
    """Bytes [start, start + length) of the staged file as the seekable body botocore wants: it reads it once to sign
    the payload (over plain HTTP) and again to send it, and seeks back to 0 to retry. Reads 1 MiB at a time locally
    (http.client asks for 8 KiB blocks); memory stays at one block whatever the part size."""

    def __init__(self, staged, start, length):
        self.staged, self.start, self.length = staged, start, length
        self.position = 0
        self._buffer = b""
        self._buffer_at = 0

    def read(self, amount=-1):
        """The next bytes of the window, at most `amount`."""
        remaining = self.length - self.position
        if remaining <= 0:
            return b""
        amount = remaining if amount is None or amount < 0 else min(amount, remaining)
        offset = self.position - self._buffer_at
        if not 0 <= offset < len(self._buffer):
            self._buffer = self.staged.read_at(self.start + self.position, max(READ_BLOCK, amount))
            self._buffer_at, offset = self.position, 0
            if not self._buffer:
                raise FileError(f"the staged file ended at byte {self.start + self.position}")
        block = self._buffer[offset:offset + amount]
        self.position += len(block)
        return block

    def seek(self, position, whence=0):
        """Move within the window (botocore rewinds before a retry)."""
        base = {0: 0, 1: self.position, 2: self.length}[whence]
        self.position = max(0, min(self.length, base + position))
        return self.position

    def tell(self):
        """The position within the window."""
        return self.position


@dataclass
class Upload:
    """A multipart upload in progress: the device's own list of the parts the store confirmed, contiguous from 1, and
    of those that completed beyond a gap (sent in parallel, or confirmed after a restart)."""
    upload_id: str
    part_size: int
    sha256: str  # the whole file's, as sent in x-amz-meta-sha256
    parts: List[list] = field(default_factory=list)  # [number, etag without quotes, sha256 base64]
    held: int = 0  # bytes in those parts
    ahead: dict = field(default_factory=dict)  # number -> (etag, sha256 base64, bytes): completed past a gap

    def note(self, key):
        """The resume note the engine records with the offset."""
        record = {"key": key, "upload_id": self.upload_id, "part_size": self.part_size, "sha256": self.sha256,
                  "parts": self.parts}
        if self.ahead:
            record["ahead"] = [[number, etag, checksum] for number, (etag, checksum, _) in sorted(self.ahead.items())]
        return json.dumps(record, separators=(",", ":"))

    def advance(self):
        """Move the parts ahead that now continue the contiguous run into it; True if any moved. A short part can
        only be the last one, so nothing follows one."""
        moved = False
        while len(self.parts) + 1 in self.ahead and self.held == len(self.parts) * self.part_size:
            number = len(self.parts) + 1
            etag, checksum, length = self.ahead.pop(number)
            self.parts.append([number, etag, checksum])
            self.held += length
            moved = True
        return moved


@dataclass
class Pending:
    """A small file waiting for publish() to PUT it."""
    staged: Staged
    size: int
    checksum: str  # SHA-256 base64
    md5: str  # hex: what a store whose ETag is the MD5 of the body must answer
    metadata: dict
