"""A USB flash drive (a camera's drive, such as the FLIR Duo's) found by file system UUID or label: as a source, and as
a target (a camera configuration written onto the drive).

The drive may be pulled out and put back at any moment. It is found afresh by `blkid` and /proc/self/mountinfo whenever
it is needed (no udev is required: many companion computers have no /dev/disk/by-uuid), so a drive that comes back as
another device node is still the same drive. With `mount: true` filesync mounts it itself (exFAT through exfat-fuse,
vfat through the kernel): read-only as a source (unless `writable`), read-write as a target, and clears a dead mount
when the drive has gone. DriveLocator does the finding and mounting for both.

Source identity: every path the source reports starts with the drive's UUID ("1234-ABCD/DCIM/100FLIR/clip.mp4"), so two
drives carrying the same names are different files in the ledger, in staging and at the targets, and a file is only
ever read back from the drive it was found on.

Target: files land as <name>.part on the drive, fsynced every SYNC_BYTES and at the end, and get their final name by a
rename after a check that the name is free: FAT and exFAT have no hard links (link() answers EPERM), so the rename that
cannot replace (FolderTarget's) falls back to check-then-rename; only another writer on the same drive in that instant
could be replaced. The directory is fsynced after the rename. The .part lives on the drive: after an unplug, the engine
resumes from what the drive that is plugged in now holds (held()), so the same drive (same UUID) goes on where it
stopped, and another drive (a label match) starts from 0 on its own; write() refuses to go on from an offset beyond
what the drive holds, so a drive swapped in between never gets the rest of a file. Names: FAT and exFAT refuse
`" * : < > ? |`, control characters and backslashes (safe names already carry the last two as %XX), and Windows cannot
open names ending in a dot or a space; fat_name() writes these as %XX in the same escape as safe names, so
filesync.paths.device_name() of the name on the drive gives the original name back. FAT32 (vfat) holds files up to
4 GiB - 1 byte: a larger file is parked with that reason (exFAT has no such limit). Names that differ only in case are
one name on FAT and exFAT: the engine's no-overwrite check sees the other file and applies on_conflict.

Errors: a read or write that fails because the drive went away (ENOTCONN from a dead FUSE mount, ENODEV, ESTALE, or
EIO/ENOENT while the drive no longer answers) is DeviceUnavailable, so the engine pauses and keeps its checkpoint; a
read that fails while the drive is still there (EIO on a bad block, exFAT's "invalid cluster") is FileError, parked
after max_attempts. The two are told apart by looking again whether the drive is present after the error.
"""
import errno
import fnmatch
import logging
import os
import re
import shutil
import stat as stat_mode
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import List, Tuple

from filesync.devices.base import RemoteFile, Settling, Source, Target, filter_options, local_digest
from filesync.devices.folder import _rename_no_replace
from filesync.errors import (ConfigError, DeviceUnavailable, FileError, FinalNameTaken, PermanentError, TransientError,
                             UnsafePath, Vanished)
from filesync.fsutil import fsync_directory
from filesync.options import Option, expand_path, not_negative
from filesync.paths import MAX_NAME_BYTES, PART_SUFFIX, check_relative

log = logging.getLogger(__name__)

CHUNK = 1 << 20
COMMAND_TIMEOUT = 30.0
SETTLE_SECONDS = 0.3  # a pulled drive takes a moment to vanish from the block layer after its first failed read
GONE_ERRNOS = {errno.ENOTCONN, errno.ENODEV, errno.ENXIO, errno.ESTALE, errno.ESHUTDOWN}
SAFE_UUID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]*$")
MOUNTABLE = ("exfat", "vfat")


@dataclass(frozen=True)
class BlockDevice:
    """A block device holding a file system, as blkid reports it."""
    node: str
    uuid: str
    label: str
    fstype: str


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo: the device numbers, the mounted subtree, where it is mounted, and whether
    the mount or its file system is read-only."""
    device_number: str
    root: str
    point: str
    fstype: str
    source: str
    read_only: bool = False


def block_devices() -> List[BlockDevice]:
    """Every block device with a file system, probed now by blkid (its cache is bypassed: it goes stale on unplug)."""
    if shutil.which("blkid") is None:
        raise DeviceUnavailable("blkid is not installed (Debian package util-linux)")
    try:
        result = subprocess.run(["blkid", "-c", "/dev/null", "-o", "export"], capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DeviceUnavailable("blkid did not answer within 30 s") from None
    if result.returncode not in (0, 2):  # 2: no device has a file system
        raise DeviceUnavailable(f"blkid failed: {result.stderr.strip() or result.returncode}")
    found = []
    for block in result.stdout.split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if fields.get("DEVNAME"):
            found.append(BlockDevice(fields["DEVNAME"], fields.get("UUID", ""), fields.get("LABEL", ""),
                                     fields.get("TYPE", "")))
    return found


def _unescape(field):
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def mounts() -> List[Mount]:
    """The mounts this process sees, from /proc/self/mountinfo."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
        for line in handle:
            fields = line.rstrip("\n").split(" ")
            separator = fields.index("-")
            options = fields[5].split(",") + fields[separator + 3].split(",")  # the mount's, then the super block's
            found.append(Mount(fields[2], _unescape(fields[3]), _unescape(fields[4]), fields[separator + 1],
                               _unescape(fields[separator + 2]), "ro" in options))
    return found


def _device_number(node):
    try:
        number = os.stat(node).st_rdev
    except OSError:
        return None
    return f"{os.major(number)}:{os.minor(number)}"


def mounts_of(device: BlockDevice, all_mounts: List[Mount]) -> List[Mount]:
    """The whole-file-system mounts of `device` (by its node name or its device numbers)."""
    number = _device_number(device.node)
    node = os.path.realpath(device.node)
    return [m for m in all_mounts if m.root == "/" and
            ((number is not None and m.device_number == number) or os.path.realpath(m.source) == node)]


def mounts_of_any(devices: List[BlockDevice], all_mounts: List[Mount]) -> List[Mount]:
    """The whole-file-system mounts of any of `devices`."""
    return [m for device in devices for m in mounts_of(device, all_mounts)]


def answers(directory) -> bool:
    """True when a directory can be listed: a dead FUSE mount answers ENOTCONN, a pulled kernel mount EIO."""
    try:
        os.listdir(directory)
    except OSError:
        return False
    return True


def _unsafe_node_name(value):
    return value.startswith("/") or value.startswith("dev/")


DRIVE_OPTIONS = [
    Option("uuid", str, "",
           help="The drive's file system UUID as blkid shows it (e.g. 1234-ABCD); give uuid or label, not both."),
    Option("label", str, "",
           help="The drive's file system label as blkid shows it; give uuid or label, not both."),
    Option("mount", bool, False,
           help="true: filesync mounts the drive at mount_point itself (exFAT through exfat-fuse, vfat through the "
                "kernel); false: it uses wherever the system mounted it."),
    Option("mount_point", str, "",
           help="Folder where filesync mounts the drive; required with mount: true."),
]


class DriveLocator:
    """Finds the configured drive (by UUID or label) among the block devices now, and where it is mounted; mounts it
    at mount_point when configured (`mode` 'ro' or 'rw'), never over another file system and never a second time.

    require_writable: only a read-write mount will do (a target); a drive mounted read-only elsewhere is then
    DeviceUnavailable with that reason, not mounted again (two mounts of one device would damage it).
    """

    def __init__(self, name, key, options, mode="ro", require_writable=False):
        if options["uuid"] and options["label"]:
            raise ConfigError(f"{key}.uuid: give uuid or label, not both")
        if not options["uuid"] and not options["label"]:
            raise ConfigError(f"{key}.uuid: required but missing (or give label); blkid shows both")
        for option in ("uuid", "label"):
            if _unsafe_node_name(options[option]):
                raise ConfigError(f"{key}.{option}: {options[option]!r} is a device path; give the file system's "
                                  f"{option} (blkid shows it): the same drive can come back as another device")
        if options["uuid"] and not SAFE_UUID.match(options["uuid"]):
            raise ConfigError(f"{key}.uuid: {options['uuid']!r} is not a file system UUID such as 1234-ABCD")
        if options["mount"] and not options["mount_point"]:
            raise ConfigError(f"{key}.mount_point: required when mount is true")
        self.name = name
        self.uuid, self.label, self.mount = options["uuid"], options["label"], options["mount"]
        self.mode = mode
        self.require_writable = require_writable
        self.mount_point = os.path.realpath(expand_path(options["mount_point"])) if options["mount_point"] else ""
        self._lock = threading.Lock()
        self._mounted_uuid = None  # the drive we mounted at mount_point, until it is unmounted
        self._warned = set()  # device nodes already reported as unusable

    def matches(self, device: BlockDevice) -> bool:
        """Whether `device` is the configured drive (a UUID compares without case, as blkid and Windows vary)."""
        if self.uuid:
            return device.uuid.lower() == self.uuid.lower()
        return device.label == self.label

    def wanted(self) -> str:
        """The configured identity, for messages: "UUID 1234-ABCD" or "label 'CAM'"."""
        return f"UUID {self.uuid}" if self.uuid else f"label {self.label!r}"

    def current(self) -> Tuple[str, str, BlockDevice]:
        """(uuid, mounted root, device) of the configured drive, mounting it if configured; DeviceUnavailable if
        it is absent, not mounted, or (require_writable) mounted read-only."""
        with self._lock:
            devices = [d for d in block_devices() if self.matches(d)]
            all_mounts = mounts()
            if self.mount:
                self._clear_dead_mount(all_mounts, devices)
                all_mounts = mounts()
            usable, read_only = [], []
            for device in devices:
                if not SAFE_UUID.match(device.uuid):
                    if device.node not in self._warned:
                        self._warned.add(device.node)
                        log.warning("%s: %s has no usable UUID (%r); skipped", self.name, device.node, device.uuid)
                    continue
                alive = [m for m in mounts_of(device, all_mounts) if answers(m.point)]
                if self.require_writable and alive and all(m.read_only for m in alive):
                    read_only.append((device, alive[0].point))
                    continue
                points = [m.point for m in alive if not (self.require_writable and m.read_only)]
                usable.append((self.mount_point not in points, device.uuid, device, points))
            if not usable:
                if read_only:
                    device, point = read_only[0]
                    raise DeviceUnavailable(f"drive {device.uuid} is mounted read-only at {point}; a target needs "
                                            "it read-write (remount it rw, or unmount it and set mount: true)")
                raise DeviceUnavailable(f"no drive with {self.wanted()} is plugged in")
            usable.sort(key=lambda entry: entry[:2])  # the one at our mount point first, then by UUID
            _, uuid, device, points = usable[0]
            if points:
                return uuid, self.mount_point if self.mount_point in points else sorted(points)[0], device
            if not self.mount:
                raise DeviceUnavailable(f"drive {uuid} ({device.node}) is plugged in but not mounted")
            self._mount(device)
            return uuid, self.mount_point, device

    def _clear_dead_mount(self, all_mounts, devices):
        """Unmount (lazily) what sits at our mount point once its drive has gone.

        Gone: the mount no longer answers (a dead FUSE mount), or its device node has vanished (a pulled drive under a
        kernel file system can still answer from cache), or the drive we mounted there is no longer plugged in. A live
        mount of something else is left alone: we never mount over it.
        """
        here = [m for m in all_mounts if m.point == self.mount_point]
        if not here:
            return
        top = here[-1]
        ours = bool(mounts_of_any(devices, [top]))
        alive = answers(self.mount_point)
        record_stale = self._mounted_uuid is not None and self._mounted_uuid not in {d.uuid for d in devices}
        if alive and ours and not record_stale:
            return
        if alive and not ours and not record_stale and _device_number(top.source) == top.device_number:
            raise DeviceUnavailable(f"{self.mount_point} already holds {top.source} ({top.fstype}), which is not a "
                                    f"drive with {self.wanted()}; not mounting over it")
        log.info("%s: unmounting %s: its drive went away", self.name, self.mount_point)
        self._unmount()

    def _unmount(self):
        result = subprocess.run(["umount", "-l", self.mount_point], capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT)
        if result.returncode != 0:
            raise DeviceUnavailable(f"cannot unmount the dead mount at {self.mount_point}: {result.stderr.strip()}")
        self._mounted_uuid = None

    def _mount(self, device: BlockDevice):
        mode = self.mode
        if device.fstype == "exfat":
            if shutil.which("mount.exfat-fuse") is None:
                raise DeviceUnavailable("mount.exfat-fuse is not installed (Debian package exfat-fuse)")
            command = ["mount.exfat-fuse", "-o", f"{mode},noatime", device.node, self.mount_point]
        elif device.fstype == "vfat":
            command = ["mount", "-t", "vfat", "-o", f"{mode},noatime,nosuid,nodev,noexec", device.node,
                       self.mount_point]
        else:
            raise DeviceUnavailable(f"drive {device.uuid} holds {device.fstype or 'no known'} file system; "
                                    f"mount: true handles {' and '.join(MOUNTABLE)}")
        try:
            os.makedirs(self.mount_point, exist_ok=True)
            result = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise DeviceUnavailable(f"cannot mount drive {device.uuid} at {self.mount_point}: {error}") from None
        if result.returncode != 0:
            raise DeviceUnavailable(f"cannot mount drive {device.uuid} ({device.node}) at {self.mount_point}: "
                                    f"{(result.stderr or result.stdout).strip()}")
        self._mounted_uuid = device.uuid
        log.info("%s: mounted drive %s (%s) %s at %s", self.name, device.uuid, device.node, mode, self.mount_point)

    def present(self, uuid, root) -> bool:
        """Whether drive `uuid` is still plugged in and its mount at `root` still answers."""
        try:
            devices = [d for d in block_devices() if d.uuid == uuid]
        except DeviceUnavailable:
            return False
        all_mounts = mounts()
        return any(m.point == root for d in devices for m in mounts_of(d, all_mounts)) and answers(root)

    def went_away(self, error: OSError, uuid, root) -> bool:
        """Whether `error` came from drive `uuid` going away (rather than from one file on a drive still there)."""
        if error.errno in GONE_ERRNOS:
            return True
        time.sleep(SETTLE_SECONDS)
        return not self.present(uuid, root)

    def close(self):
        """Clear our mount point when the drive behind it has gone; a mount that still answers stays."""
        if not self.mount:
            return
        with self._lock:
            try:
                self._clear_dead_mount(mounts(), [d for d in block_devices() if self.matches(d)])
            except DeviceUnavailable as error:
                log.warning("%s: %s", self.name, error)


class DriveSource(Source):
    """Files on a removable drive, found by file system UUID or label; see the module text."""

    kind = "drive"
    can_delete = True
    OPTIONS = DRIVE_OPTIONS + filter_options(exclude=()) + [
        Option("writable", bool, False,
               help="true: filesync mounts the drive read-write (only with mount: true), as removing files after "
                    "upload needs; false: read-only."),
        Option("min_age", float, 0.0, not_negative,
               help="Seconds (of this computer's clock) a file's size and time must stay the same before it counts as"
                    " complete; 0 takes files at once."),
    ]

    def __init__(self, name, raw_options, key, context=None):
        super().__init__(name, raw_options, key, context)
        options = self.options
        self.drive = DriveLocator(name, key, options, mode="rw" if options["writable"] else "ro")
        if options["writable"] and not options["mount"]:
            raise ConfigError(f"{key}.writable: applies only when mount is true (the drive is mounted by its owner)")
        self._settling = Settling(options["min_age"])  # the camera's clock may be anything

    def _current(self) -> Tuple[str, str]:
        uuid, root, _ = self.drive.current()
        return uuid, root

    # Paths

    def _split(self, path) -> Tuple[str, str]:
        check_relative(path)
        uuid, _, relative = path.partition("/")
        if not relative or not SAFE_UUID.match(uuid):
            raise PermanentError(f"{path} is not a path of a drive source (<uuid>/<path on the drive>)")
        return uuid, relative

    def _locate(self, path) -> Tuple[str, str, str]:
        """(uuid, root, full local path) of `path`, on the drive it was found on, which must be plugged in now."""
        uuid, relative = self._split(path)
        present, root = self._current()
        if present != uuid:
            # Another drive of ours is plugged in: this file waits for its own drive without holding the others up.
            raise TransientError(f"{path} is on drive {uuid}, which is not plugged in (drive {present} is)")
        return uuid, root, os.path.join(root, *relative.split("/"))

    def _failure(self, error: OSError, path, uuid, root, offset):
        """DeviceUnavailable if the drive went away, else the error of this one file."""
        reason = error.strerror or str(error)
        if self.drive.went_away(error, uuid, root):
            return DeviceUnavailable(f"drive {uuid} went away while reading {path}: {reason}")
        if error.errno == errno.ENOENT:
            return Vanished(f"{path} is no longer on drive {uuid}")
        return FileError(f"{path}: {reason} at byte {offset} (drive {uuid} is still there: a file system error)")

    def _wanted_file(self, relative) -> bool:
        """include/exclude globs, matched without case (FAT and exFAT names are case-insensitive) against the path
        on the drive and against the bare name."""
        lowered = relative.lower()
        name = lowered.rsplit("/", 1)[-1]

        def hit(patterns):
            return any(fnmatch.fnmatchcase(lowered, p.lower()) or fnmatch.fnmatchcase(name, p.lower())
                       for p in patterns)
        return hit(self.options["include"]) and not hit(self.options["exclude"])

    # Source

    def probe(self):
        """Raise DeviceUnavailable while no configured drive is plugged in (and mounted); mounts it if configured."""
        self._current()

    def close(self):
        """Clear our mount point when the drive behind it has gone; a mount that still answers stays."""
        self.drive.close()

    def list(self) -> List[RemoteFile]:
        """Every wanted file on the plugged-in drive, as '<uuid>/<path on the drive>'."""
        uuid, root = self._current()
        found = []
        pending = [""]
        while pending:
            relative_directory = pending.pop()
            directory = os.path.join(root, *relative_directory.split("/")) if relative_directory else root
            try:
                with os.scandir(directory) as entries:
                    for entry in sorted(entries, key=lambda e: e.name):
                        relative = f"{relative_directory}/{entry.name}" if relative_directory else entry.name
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(relative)
                        elif entry.is_file(follow_symlinks=False) and self._wanted_file(relative):
                            status = entry.stat(follow_symlinks=False)
                            path = f"{uuid}/{relative}"
                            found.append(RemoteFile(path, status.st_size, status.st_mtime))
            except OSError as error:
                failure = self._failure(error, relative_directory or "/", uuid, root, 0)
                if isinstance(failure, DeviceUnavailable):
                    raise failure from None
                log.warning("%s: skipped directory %s: %s", self.name, relative_directory or "/", failure)
        return list(self._settling.mark(found))

    def stat(self, path) -> RemoteFile:
        uuid, root, full = self._locate(path)
        try:
            status = os.stat(full)
        except OSError as error:
            raise self._failure(error, path, uuid, root, 0) from None
        return RemoteFile(path, status.st_size, status.st_mtime)

    def read(self, path, offset):
        """Yield the file's bytes from `offset`; see the module text for how failures are told apart."""
        uuid, root, full = self._locate(path)
        position = offset
        try:
            with open(full, "rb") as handle:
                handle.seek(offset)
                while True:
                    block = handle.read(CHUNK)
                    if not block:
                        return
                    position += len(block)
                    yield block
        except OSError as error:
            raise self._failure(error, path, uuid, root, position) from None

    @classmethod
    def deletes(cls, options):
        """A drive filesync mounts itself is mounted read-only unless `writable`: then it cannot delete."""
        return not options.get("mount") or bool(options.get("writable"))

    def delete(self, path):
        """Remove the file from the drive. A drive we mount read-only (writable: false, the default) keeps it."""
        if self.options["mount"] and not self.options["writable"]:
            raise PermanentError(f"{self.key}.writable is false: drive is mounted read-only, so {path} stays on it")
        uuid, root, full = self._locate(path)
        try:
            os.remove(full)
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno == errno.EROFS:
                raise PermanentError(f"drive {uuid} is mounted read-only at {root}; {path} stays on it") from None
            raise self._failure(error, path, uuid, root, 0) from None
        try:  # make the removal durable before the drive can be pulled
            fsync_directory(os.path.dirname(full))
        except OSError as error:
            log.debug("%s: fsync after removing %s: %s", self.name, path, error)


# The target

SYNC_BYTES = 1 << 20  # fsync the .part this often: a drive pulled mid-write loses at most this much of it
FAT32_MAX_FILE = (1 << 32) - 1
# What FAT and exFAT refuse in a name beyond what safe names escape already (control characters, backslash), and a
# name's last character when it is a dot or a space (Windows cannot open such names).
FAT_REFUSED = re.compile(r'["*:<>?|]|[. ](?=/|$)')


def fat_name(path: str) -> str:
    """The name a safe name `path` takes on a FAT or exFAT drive: the characters these file systems refuse, and a
    dot or space ending a name, as %XX (the escape of safe names, which never writes these). Reversible:
    paths.device_name(fat_name(p)) == paths.device_name(p). UnsafePath when a name grows beyond 255 bytes."""
    mapped = FAT_REFUSED.sub(lambda match: f"%{ord(match.group(0)):02X}", path)
    for part in mapped.split("/"):
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise UnsafePath(f"{path[:60]!r}: on a FAT or exFAT drive a component becomes {part[:60]!r}..., over "
                             f"{MAX_NAME_BYTES} bytes")
    return mapped


def check_fits(fstype: str, size: int, path: str, uuid: str):
    """PermanentError when the drive's file system cannot hold a file of `size` bytes (FAT32: 4 GiB - 1 byte)."""
    if fstype == "vfat" and size > FAT32_MAX_FILE:
        raise PermanentError(f"{path} is {size} bytes; drive {uuid} is FAT32, which holds files up to 4 GiB - 1 "
                             "byte (format it as exFAT to take it)")


def _root_check(value):
    if not value:
        return None
    try:
        check_relative(value)
    except UnsafePath as error:
        return str(error)
    return None if fat_name(value) == value else f"{value!r} holds characters FAT and exFAT refuse"


class DriveTarget(Target):
    """A removable drive as a target, found by file system UUID or label; files go under `root` on it. See the
    module text for publishing, resuming after an unplug, names and limits."""

    kind = "drive"
    digests = ("sha256",)  # of its own bytes: a local read
    readable = True
    can_delete = True
    # each upload worker has its own target object, and each object would mount the drive itself (mount: true):
    # two at once could mount it twice, which damages an exFAT (FUSE) file system
    max_transfers = 1
    max_transfers_reason = "each worker's target would mount the drive itself"
    OPTIONS = DRIVE_OPTIONS + [Option("root", str, "", _root_check,
                                      help="Folder on the drive, relative to its top, that receives the files; empty:"
                                           " the top of the drive.")]

    def __init__(self, name, raw_options, key, context=None):
        super().__init__(name, raw_options, key, context)
        self.drive = DriveLocator(name, key, self.options, mode="rw", require_writable=True)
        self.root = [part for part in self.options["root"].split("/") if part]

    def _where(self) -> Tuple[str, str, str]:
        """(uuid, mounted root, file system type) of the configured drive now; DeviceUnavailable when absent."""
        uuid, mounted, device = self.drive.current()
        return uuid, mounted, device.fstype

    def _local(self, mounted, drive_path):
        return os.path.join(mounted, *self.root, *drive_path.split("/"))

    def _failure(self, error: OSError, what, uuid, mounted):
        """DeviceUnavailable if the drive went away (or turned read-only), else what this error means."""
        reason = error.strerror or str(error)
        if self.drive.went_away(error, uuid, mounted):
            return DeviceUnavailable(f"drive {uuid} went away while {what}: {reason}")
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return TransientError(f"drive {uuid} is full ({what})")
        if error.errno == errno.EROFS:
            return DeviceUnavailable(f"drive {uuid} is read-only now ({what}); a target needs it read-write")
        if error.errno == errno.EFBIG:
            return PermanentError(f"drive {uuid} cannot hold a file this large ({what}): {reason}")
        return TransientError(f"drive {uuid}: {reason} ({what})")

    def probe(self):
        """Raise DeviceUnavailable while the drive is absent, not mounted or mounted read-only (mounts it if
        configured)."""
        self._where()

    def close(self):
        """Clear our mount point when the drive behind it has gone; a mount that still answers stays."""
        self.drive.close()

    def stat(self, path):
        uuid, mounted, _ = self._where()
        final = self._local(mounted, fat_name(path))
        try:
            status = os.stat(final)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            raise self._failure(error, f"looking at {path}", uuid, mounted) from None
        if not stat_mode.S_ISREG(status.st_mode):
            raise PermanentError(f"{final} on drive {uuid} is not a file")
        return status.st_size

    def digest(self, path, algorithm):
        uuid, mounted, _ = self._where()
        try:
            return local_digest(self._local(mounted, fat_name(path)), algorithm)
        except OSError as error:
            raise self._failure(error, f"reading {path} back", uuid, mounted) from None

    def read(self, path):
        uuid, mounted, _ = self._where()
        try:
            with open(self._local(mounted, fat_name(path)), "rb") as handle:
                yield from iter(lambda: handle.read(CHUNK), b"")
        except OSError as error:
            raise self._failure(error, f"reading {path} back", uuid, mounted) from None

    def held(self, path, note=""):
        """The size of <path>.part on the drive plugged in now (another drive holds its own part, or none)."""
        uuid, mounted, _ = self._where()
        try:
            return os.path.getsize(self._local(mounted, self.part_name(fat_name(path))))
        except (FileNotFoundError, NotADirectoryError):
            return 0
        except OSError as error:
            raise self._failure(error, f"looking at {path}{PART_SUFFIX}", uuid, mounted) from None

    def discard(self, path):
        uuid, mounted, _ = self._where()
        try:
            os.remove(self._local(mounted, self.part_name(fat_name(path))))
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as error:
            raise self._failure(error, f"removing {path}{PART_SUFFIX}", uuid, mounted) from None

    def write(self, path, stream, offset, size, progress):
        """Write `stream` into <path>.part from `offset`, fsynced every SYNC_BYTES and at the end. Refuses (a
        TransientError) to go on from beyond what the part on this drive holds: the drive was swapped meanwhile."""
        uuid, mounted, fstype = self._where()
        check_fits(fstype, size, path, uuid)
        part = self._local(mounted, self.part_name(fat_name(path)))
        what = f"writing {path}{PART_SUFFIX}"
        try:
            os.makedirs(os.path.dirname(part), exist_ok=True)
            with open(part, "r+b" if os.path.exists(part) else "wb") as handle:
                held = os.fstat(handle.fileno()).st_size
                if held < offset:
                    raise TransientError(f"drive {uuid} holds {held} bytes of {path}{PART_SUFFIX}, not the {offset} "
                                         "to go on from (another drive?): sending again from what it holds")
                handle.truncate(offset)
                handle.seek(offset)
                unsynced = 0
                for block in iter(lambda: stream.read(CHUNK), b""):
                    handle.write(block)
                    offset += len(block)
                    unsynced += len(block)
                    if unsynced >= SYNC_BYTES:
                        handle.flush()
                        os.fsync(handle.fileno())
                        unsynced = 0
                    progress(offset)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            raise self._failure(error, what, uuid, mounted) from None

    def publish(self, path, size, replace=False):
        """Rename <path>.part to `path` on the drive (check, then rename: see the module text); fsync the folder."""
        uuid, mounted, _ = self._where()
        name = fat_name(path)
        final, part = self._local(mounted, name), self._local(mounted, self.part_name(name))
        try:
            held = os.path.getsize(part)
        except FileNotFoundError:
            held = None
        except OSError as error:
            raise self._failure(error, f"publishing {path}", uuid, mounted) from None
        if held != size:
            raise TransientError(f"drive {uuid} holds {held or 0} bytes of {path}{PART_SUFFIX}, expected {size}")
        try:
            if replace:
                os.replace(part, final)
            else:
                _rename_no_replace(part, final)
            fsync_directory(os.path.dirname(final))
        except FileExistsError:
            raise FinalNameTaken(f"{self._location(uuid, name)} exists") from None
        except OSError as error:
            raise self._failure(error, f"publishing {path}", uuid, mounted) from None
        return self._location(uuid, name)

    def _location(self, identity, name):
        return f"drive:{identity}/" + "/".join(self.root + [name])

    def location(self, path):
        """drive:<UUID or label>/<root>/<name on the drive>, whether or not the drive is plugged in."""
        return self._location(self.drive.uuid or self.drive.label, fat_name(path))

    def delete(self, path):
        uuid, mounted, _ = self._where()
        final = self._local(mounted, fat_name(path))
        try:
            os.remove(final)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as error:
            raise self._failure(error, f"removing {path}", uuid, mounted) from None
        try:  # make the removal durable before the drive can be pulled
            fsync_directory(os.path.dirname(final))
        except OSError as error:
            log.debug("%s: fsync after removing %s: %s", self.name, path, error)
