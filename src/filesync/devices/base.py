"""The two small interfaces every device implements: Source (where files come from) and Target (where they go).

A device module holds one class; filesync.devices maps a config `kind` to it. Devices raise the errors of
filesync.errors so the engine knows whether to wait, retry or park. Paths given to devices are relative,
'/'-separated and already checked by filesync.paths.
"""
import hashlib
import threading
import time
import zlib
from dataclasses import dataclass, replace
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from filesync.errors import ConfigError, PermanentError, TransientError
from filesync.fsutil import FolderSyncs
from filesync.options import Option, parse_options
from filesync.paths import PART_SUFFIX, part_name

# What a target does when a final name holds another file: publish this version under paths.conflict_name, park
# it with the reason, or replace the other file (only when configured).
ON_CONFLICT = ("keep_both", "park", "overwrite")


@dataclass(frozen=True)
class RemoteFile:
    """A file as a source lists it. `complete` is False while the device knows it is still being written.

    `problem` is set when the device listed a name it cannot serve (it cannot be decoded, stat failed for this one
    entry): the engine records the file as failed with that reason, and the other files go on.
    """
    path: str
    size: int
    mtime: float
    complete: bool = True
    problem: str = ""


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
    """Compute `algorithm` ('sha256', 'md5', 'crc32' or 'mavftp-crc32') over a local file, reading 1 MiB blocks.

    Hex text for the hashes, an int for the CRCs (as the devices report them).
    """
    if algorithm in ("sha256", "md5"):
        digest = hashlib.new(algorithm)
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


def digest_text(value: int | str) -> str:
    """A digest in the one text form targets and the ledger use: lowercase hex, CRCs as 8 hex digits."""
    return f"{value:08x}" if isinstance(value, int) else value.lower()


def local_digest(path: str, algorithm: str) -> str:
    """local_checksum in digest_text form, to compare with Target.digest()."""
    return digest_text(local_checksum(path, algorithm))


def check_as_listed(path: str, listed: Optional[tuple], now: tuple, offset: int) -> None:
    """Before a remote read from `offset`: TransientError ("not finished yet") when the file's (size, mtime) `now`
    differs from what the last listing said (`listed`, None: not listed), or is shorter than what was copied."""
    if listed is not None and tuple(listed) != tuple(now):
        raise TransientError(f"{path} changed since it was listed ({listed[0]} -> {now[0]} bytes): not finished yet")
    if offset > now[0]:
        raise TransientError(f"{path} is {now[0]} bytes now, less than the {offset} already copied: it changed")


def send_blocks(stream, send, offset: int, block_size: int, progress) -> tuple:
    """Send `stream` block by block with `send(block)`, calling progress(bytes_done) from `offset` on; returns
    (bytes done, the error that stopped it or None). An error of our side (reading the staged file, progress()
    stopping the upload) is returned rather than raised, so the caller can let the bytes already sent land on the
    server before it raises it; an error of `send` is raised at once."""
    sent = offset
    while True:
        try:
            block = stream.read(block_size)
        except BaseException as error:
            return sent, error
        if not block:
            return sent, None
        send(block)
        sent += len(block)
        try:
            progress(sent)
        except BaseException as error:
            return sent, error


# A listing is remembered by runs of entries, not by file: a run ends where the folder changes, after a name whose
# hash falls on RUN_BOUNDARY (so a file added or removed changes only its own run, wherever it sorts) or at RUN_MAX
# entries. What is remembered of an unchanged run is one number: memory follows the number of runs, about one per
# RUN_BOUNDARY files, not the number of files (100,000 registered files made the finder 1.8x its idle size when it
# kept each one).
RUN_BOUNDARY = 128
RUN_MAX = 500


def listing_runs(files: Iterable[RemoteFile]) -> Iterator[List[RemoteFile]]:
    """The entries of a listing, in its order, in runs (see RUN_BOUNDARY); a run is yielded once it ends."""
    run, folder = [], None
    for found in files:
        here = found.path.rpartition("/")[0]
        if run and here != folder:
            yield run
            run = []
        run.append(found)
        folder = here
        if len(run) >= RUN_MAX or hash(found.path) % RUN_BOUNDARY == 0:
            yield run
            run = []
    if run:
        yield run


def run_digest(entries: Iterable[tuple]) -> int:
    """One number for a run's entries (tuples of names, sizes, times): Python's 64-bit hash, equal for equal runs
    within this process; two different runs sharing it is about a chance in 2^64, and what is kept of it is dropped
    from time to time anyway (Finder.RESCAN_EVERY, a restart)."""
    return hash(tuple(entries))


class Settling:
    """When a listed file counts as complete for a source with `min_age`: its size and time stayed the same for
    min_age seconds of this computer's own clock. The file's time is only compared with its own earlier value, never
    with our clock: a camera whose clock was never set or a FAT drive written in local time can put it hours ahead
    (the file would wait until our clock caught up) or behind (a file still growing would pass at once).

    After a restart nothing is known: every file is first seen then, and is complete at the first listing at least
    min_age later (a file that was stable before waits min_age once; one that keeps changing never passes). Only the
    files of the last whole listing are remembered, so memory follows what the source holds: a run of the listing
    (listing_runs) that stayed the same for min_age is remembered as one number and its files are complete; the files
    of the other runs each as one number for its name, size and time (run_digest) and when first seen so. A file whose run changed after it had been
    still (a neighbour added) is seen anew and waits min_age again: it was complete before, so it was taken then.
    """

    def __init__(self, min_age: float, clock: Callable[[], float] = time.monotonic):
        self.min_age = min_age
        self._clock = clock
        self._runs: Dict[int, float] = {}  # run digest -> when first seen so
        self._first_seen: Dict[int, float] = {}  # digest of (path, size, mtime) -> when first seen so

    def mark(self, files: Iterable[RemoteFile]) -> Iterator[RemoteFile]:
        """`files` (one whole listing), each with `complete` cleared while it has not been still for min_age; a
        file the device already called incomplete stays so. Forgets files no longer listed once the listing ends."""
        if not self.min_age:
            yield from files
            return
        now = self._clock()
        runs, seen = {}, {}
        for run in listing_runs(files):
            digest = run_digest((found.path, found.size, found.mtime) for found in run)
            since = runs[digest] = self._runs.get(digest, now)
            if now - since >= self.min_age:
                yield from run
                continue
            for found in run:
                key = run_digest((found.path, found.size, found.mtime))
                first = seen[key] = self._first_seen.get(key, now)
                still = now - first >= self.min_age
                yield found if still or not found.complete else replace(found, complete=False)
        self._runs, self._first_seen = runs, seen  # only after a whole listing: one cut short forgets nothing


class PerThread:
    """One connection per thread, made by `connect()` on first use: clients like ftplib and paramiko match answers to
    requests on whichever thread reads them, and the engine lists and copies from different threads."""

    def __init__(self, connect: Callable[[], object]):
        self._connect = connect
        self._lock = threading.Lock()
        self._connections: Dict[int, Tuple[threading.Thread, object]] = {}

    def get(self):
        """This thread's connection."""
        me = threading.current_thread()
        with self._lock:
            entry = self._connections.get(me.ident)
            if entry is None or entry[0] is not me:  # a thread id is reused once its thread ended
                entry = (me, self._connect())
                self._connections[me.ident] = entry
            return entry[1]

    def __len__(self):
        """How many connections are open."""
        return len(self._connections)

    def close(self):
        """Close this thread's connection and those of threads that have ended (never one in use elsewhere)."""
        me = threading.current_thread()
        with self._lock:
            for ident, (thread, connection) in list(self._connections.items()):
                if thread is me or not thread.is_alive():
                    connection.close()
                    del self._connections[ident]


@dataclass
class DeviceContext:
    """What a device may use besides its options: the lease client for one-session devices and who it acts for."""
    lock: object = None  # acquire/release like filesync.lock.LeaseTable; None: the device needs no lease
    owner: str = "filesync"  # the lease owner name, unique per process (the ROS node name)
    vehicle_links: object = None  # under ROS: the vehicle node's services; None: `mavlink` devices connect directly
    ros_node: object = None  # under ROS 2: the filesync node (its .node) on which `mavros` devices make their clients


DEFAULT_TRANSFERS = 4  # as rclone's --transfers
INCLUDE_HELP = ("Glob patterns (fnmatch) of the files to take, each matched against a file's path under the root and "
                "against its bare name; a file must match one of them.")
EXCLUDE_HELP = ("Glob patterns of files to leave alone even when include matches them (hidden files, unfinished "
                "uploads).")


def glob_patterns(patterns):
    """Option check: a list of non-empty glob patterns."""
    bad = [p for p in patterns if not isinstance(p, str) or not p]
    return f"expected a list of glob patterns, got {bad[0]!r}" if bad else None


def filter_options(exclude=(".*", "*" + PART_SUFFIX)):
    """A source's include and exclude options (glob patterns); `exclude` is the default of the second."""
    return [Option("include", list, ["*"], glob_patterns, help=INCLUDE_HELP),
            Option("exclude", list, list(exclude), glob_patterns, help=EXCLUDE_HELP)]


class Device:
    """What sources and targets share: a name, validated options and a close().

    max_transfers: how many transfers the device serves at once (None: no limit of its own); its `transfers` option
    (default DEFAULT_TRANSFERS, or max_transfers when lower) may not ask for more.
    """

    kind = ""
    OPTIONS: List = []
    ENGINE_OPTIONS: List = []  # options the engine reads, valid for every device of the role
    max_transfers: Optional[int] = None
    max_transfers_reason = ""  # why, for the message refusing more

    def __init__(self, name: str, raw_options: dict, key: str, context=None):
        self.name = name
        self.key = key
        self.options = parse_options(self.OPTIONS + self.ENGINE_OPTIONS + [self.transfers_option()], raw_options, key,
                                     ignore=("kind",))
        self.context = context

    @classmethod
    def transfers_option(cls) -> Option:
        """The `transfers` option of this kind: how many files the engine moves at once on one device, each with its
        own worker and connection; an integer from 1 to max_transfers."""
        most = cls.max_transfers

        def check(value):
            if value < 1:
                return f"must be 1 or more, got {value}"
            if most is not None and value > most:
                return f"a {cls.kind} device serves at most {most} at once ({cls.max_transfers_reason}), got {value}"
            return None

        return Option("transfers", int, min(DEFAULT_TRANSFERS, most or DEFAULT_TRANSFERS), check,
                      help="Files this device moves at once, each by its own worker with its own connection; from 1 "
                           "to the most the device serves (1 for vehicles and drive targets).")

    def probe(self) -> None:
        """A cheap check that the device answers; raises DeviceUnavailable when it does not. Used while it is down."""

    def close(self) -> None:
        """Release connections; the device may be used again afterwards (it reconnects)."""


class Source(Device):
    """Where files come from. Capabilities, declared by each device and checked by the engine and the config:

    can_delete: delete() removes a file (used only through the engine's removal contract).
    checksum_algorithm: the algorithm of checksum() ('mavftp-crc32', 'sha256', ...), or None where there is none.
    """

    can_delete = False
    checksum_algorithm = None

    @classmethod
    def deletes(cls, options: dict) -> bool:
        """Whether a source of this kind configured with `options` can delete files (the config check asks)."""
        return cls.can_delete

    def list(self) -> Iterator[RemoteFile]:
        """Every file the source holds now, recursively. Raises DeviceUnavailable when it cannot be reached.

        A name the device cannot serve is listed with RemoteFile.problem set, never raised: one file's problem stays
        that file's problem.
        """
        raise NotImplementedError

    def stat(self, path: str) -> RemoteFile:
        """The file's current size and time; raises Vanished if it no longer exists."""
        raise NotImplementedError

    def read(self, path: str, offset: int) -> Iterator[bytes]:
        """Yield the file's bytes from `offset` to its end. The engine closes the iterator when it stops early."""
        raise NotImplementedError

    def checksum(self, path: str) -> Optional[Checksum]:
        """The digest the device computes itself (of checksum_algorithm), or None where it offers none."""
        return None

    def delete(self, path: str) -> None:
        """Remove the file; a file already gone counts as removed. Called only by the engine after it checked that the
        source still holds the very version every target verified."""
        raise PermanentError(f"source {self.name} ({self.kind}) cannot delete files")


class Target(Device):
    """Where files go. The engine owns the contract (resume, verify, never overwrite, conflicts); a target does the I/O
    and declares what it can do:

    resumable: held() and write(offset > 0) continue an interrupted upload of <path>.part.
    verifiable: stat() tells what a final name holds, so the engine can check a copy and refuse to overwrite.
    digests: algorithms digest() computes on the target's side without moving the file ('sha256', 'crc32', 'md5'),
        best first; the engine verifies every published copy with the first of them.
    readable: read() streams a final name's bytes back (the engine compares contents with it where no digest exists).
    can_delete: delete() removes a final name.
    publishes_exclusively(size): publish() itself refuses a taken final name (FinalNameTaken) and nothing of a file of
        that size goes over the wire before publish(), so the engine looks at the final name only when publish()
        finds it taken (S3's PutObject with If-None-Match: *).
    sends_whole(size): a file of that size goes from byte 0 without asking held(): write(offset=0) replaces whatever
        an interrupted earlier attempt left under the temporary name (FTP, under 1 MiB: a resend costs less than the
        question before every file).

    Paths are the engine's: relative, '/'-separated, already made safe for targets (filesync.paths.safe_name).
    """

    resumable = True
    verifiable = True
    digests: Tuple[str, ...] = ()
    readable = False
    can_delete = False
    ENGINE_OPTIONS = [Option("on_conflict", str, "keep_both", choices=ON_CONFLICT,
                             help="What happens when a final name already holds other bytes: keep_both (the version "
                                  "goes to <stem>.<its UTC time>.<ext>), park (the file is parked with the reason) or"
                                  " overwrite.")]

    def __init__(self, name: str, raw_options: dict, key: str, context=None):
        super().__init__(name, raw_options, key, context)
        # publish() makes a new final name durable through it: the engine holds the fsyncs of a batch of uploads and
        # settles them (one per folder) before it records any of them
        self.folder_syncs = FolderSyncs()
        if not self.verifiable and "on_conflict" in (raw_options or {}):
            raise ConfigError(f"{key}.on_conflict: {self.kind} targets name what they store themselves; there is "
                              "no final name that could conflict")

    version_id = 0  # the version being uploaded, for its temporary name (set_context)
    # How published copies are checked, for the status and /diagnostics where it depends on the peer (S3: "store
    # checksum", "ETag MD5" or "read back", once found); '' where the device's kind says it all. Never asks the peer.
    verified_by = ""

    def set_context(self, source=None, vehicle=None, version_time=None, sha256="", version_id=0):
        """Whose version the following calls are about (the engine calls it before an upload, on the target's one
        worker thread): the source's name, the vehicle, the version's time, its SHA-256 and its ledger id. Targets
        that name or label objects by them (S3 keys and metadata) use them; every target's part_name() uses the id."""
        self.version_id = version_id

    def serve_with(self, first: "Target") -> None:
        """The engine gives each of a target's `transfers` workers a target object of its own; this one (not `first`)
        may share `first`'s client where that client serves several threads at once. By default nothing is shared:
        each worker keeps its own connection."""

    def part_name(self, path: str) -> str:
        """The temporary name of the upload of `path` for the version set_context() named (paths.part_name)."""
        return part_name(path, self.version_id)

    def stat(self, path: str) -> Optional[int]:
        """The size of the file under the final name `path`, or None when there is none (DeviceUnavailable when
        the target cannot be reached: an absent answer must never pass for a free name)."""
        raise NotImplementedError

    def digest(self, path: str, algorithm: str) -> str:
        """The target's own digest of the final name's bytes, in filesync's text form (see local_digest)."""
        raise PermanentError(f"target {self.name} ({self.kind}) computes no {algorithm}")

    def fingerprint(self, path: str, algorithm: str) -> Tuple[Optional[int], str]:
        """stat() and, where there is a file, digest(): (size, digest), (None, '') where there is none. A target that
        learns both from one request (an S3 HEAD) overrides it."""
        size = self.stat(path)
        return (None, "") if size is None else (size, self.digest(path, algorithm))

    def publishes_exclusively(self, size: int) -> bool:
        """Whether publish() of a file of `size` bytes refuses a taken final name by itself with nothing sent before
        it (see the class doc); False: the engine looks at the final name before sending."""
        return False

    def sends_whole(self, size: int) -> bool:
        """Whether a file of `size` bytes is sent from byte 0 without asking held(), write(offset=0) replacing what an
        earlier attempt left under the temporary name (see the class doc); False: the engine resumes from held()."""
        return False

    def read(self, path: str) -> Iterator[bytes]:
        """Yield the bytes of the final name `path` (only where readable)."""
        raise PermanentError(f"target {self.name} ({self.kind}) cannot read files back")

    def held(self, path: str, note: str = "") -> int:
        """How many bytes of an unfinished upload of `path` the target holds (0 when none).

        `note` is what write() last recorded with progress() for this upload (an S3 UploadId and its parts): the
        device's own list, which it checks against what the server says.
        """
        return 0

    def discard(self, path: str) -> None:
        """Drop an unfinished upload of `path` (it cannot be resumed, or it is larger than the file)."""

    def write(self, path: str, stream, offset: int, size: int, progress: Callable[[int], None]) -> None:
        """Send `stream` (a binary file positioned at `offset`) to the temporary name.

        Call progress(bytes_done) as bytes go out, or progress(bytes_done, note) to have `note` (a short text: what the
        device needs to resume, e.g. an UploadId and its parts) recorded in the ledger with that offset; held() gets it
        back after a restart. Raise StartOver where the target refuses to continue at `offset`.
        """
        raise NotImplementedError

    def publish(self, path: str, size: int, replace: bool = False) -> str:
        """Give the finished upload its final name and return its location (URL or path).

        Never replaces a file already under that name unless `replace`: raise FinalNameTaken instead (where the
        target's rename can replace, check first; the engine checked a moment before, so that is a narrow race).
        """
        raise NotImplementedError

    def location(self, path: str) -> str:
        """Where the final name `path` is, as a URL or path for people (the ledger and the status show it)."""
        return path

    def check_stored(self, path: str, sha256: str, note: str = "") -> List[str]:
        """For `filesync audit`: what the target keeps about the final name `path` beyond its size and digest (S3:
        its checksum and metadata), against the version's `sha256` and the upload's `note`; one text per
        disagreement, [] when all agree or there is nothing more to check."""
        return []

    def delete(self, path: str) -> None:
        """Remove a published file (only where can_delete); a file already gone counts as removed."""
        raise PermanentError(f"target {self.name} ({self.kind}) cannot delete files")
