"""Real exFAT drives for tests: an image made by mkfs.exfat, attached to a loop device, mounted with exfat-fuse.

Nothing here is a fake. "Unplugging" ends the FUSE mount while a reader is inside it (its mount.exfat-fuse process is
killed, so reads fail with ENOTCONN, as FACTS.md records for a hot-unplug), clears the dead mount and detaches the loop
device, after which blkid no longer finds the drive. "Replugging" attaches the image again (possibly as another
/dev/loopN) and mounts it again. A bad file is made the way a failing drive makes one: its cluster chain in the image's
FAT is broken, so exfat-fuse answers "invalid cluster" (EIO) past the first cluster while every other file reads fine.

Needs root, /dev/loop-control and /dev/fuse, and the Debian packages exfatprogs and exfat-fuse.
"""
import contextlib
import hashlib
import os
import random
import shutil
import signal
import struct
import subprocess
import time

TOOLS = {"mkfs.exfat": "exfatprogs", "tune.exfat": "exfatprogs", "mount.exfat-fuse": "exfat-fuse",
         "losetup": "mount", "blkid": "util-linux", "umount": "mount"}
COMMAND_TIMEOUT = 60
BAD_CLUSTER = 0xFFFFFFF7  # the FAT's own "bad cluster" mark: outside the cluster heap, so exfat-fuse refuses it


def unique_serial():
    """A volume serial (the UUID) no other drive of a concurrent test run has: blkid sees every loop device here."""
    return random.SystemRandom().getrandbits(32) | 0x10000000


def unique_label():
    """A volume label of 10 characters, unique like unique_serial()."""
    return f"T{random.SystemRandom().getrandbits(36):09X}"[:11]


def unavailable_reason():
    """Why real exFAT drives cannot be made here (a skip reason), or None when they can."""
    if os.geteuid() != 0:
        return "needs root to attach loop devices and mount FUSE file systems"
    for device in ("/dev/loop-control", "/dev/fuse"):
        if not os.path.exists(device):
            return f"{device} is missing: this machine cannot attach loop devices or mount FUSE file systems"
    return None


def missing_tools():
    """The Debian packages whose programs are not installed (empty when all are)."""
    return sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})


def _run(*command, check=True):
    return subprocess.run(command, check=check, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)


def _wait(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def mounted_at(mount_point):
    """True when /proc/self/mountinfo lists a mount at `mount_point` (a dead FUSE mount counts)."""
    target = os.path.realpath(mount_point)
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split(" ")
            if _unescape(fields[4]) == target:
                return True
    return False


def _unescape(field):
    for escaped, plain in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(escaped, plain)
    return field


def fuse_pids(mount_point):
    """The ids of the mount.exfat-fuse processes serving `mount_point` (whoever started them)."""
    target = os.path.realpath(mount_point)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().decode("utf-8", "replace").split("\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == "mount.exfat-fuse" and target in argv:
            pids.append(int(entry))
    return pids


def end_fuse_mount(mount_point):
    """Kill the FUSE daemon behind `mount_point`: readers inside get ENOTCONN, the mount stays listed until unmounted."""
    pids = fuse_pids(mount_point)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait(lambda: not any(pid in fuse_pids(mount_point) for pid in pids), 10, f"the FUSE daemon of {mount_point}")
    return pids


def lazy_unmount(mount_point):
    """Detach whatever is mounted at `mount_point` (alive or dead) if anything is."""
    if mounted_at(mount_point):
        _run("umount", "-l", mount_point, check=False)


class ExfatDrive:
    """One exFAT image with a chosen label and volume serial (its UUID), and the loop device and mount it has now."""

    def __init__(self, image, label, serial, size_mb=64):
        self.image = str(image)
        self.label = label
        self.serial = serial
        self.size_mb = size_mb
        self.device = None
        self.mount_point = None

    @property
    def uuid(self):
        """The UUID blkid reports for this drive, e.g. '1234-ABCD'."""
        text = f"{self.serial:08X}"
        return f"{text[:4]}-{text[4:]}"

    def format(self):
        """Make the image: mkfs.exfat with the label, then tune.exfat to set the volume serial."""
        with open(self.image, "wb") as handle:
            handle.truncate(self.size_mb << 20)
        _run("mkfs.exfat", "-L", self.label, self.image)
        _run("tune.exfat", "-I", f"0x{self.serial:08x}", self.image)
        return self

    def attach(self):
        """Attach the image to a free loop device (as plugging the drive in); returns its node."""
        assert self.device is None, "already attached"
        self.device = _run("losetup", "-f", "--show", self.image).stdout.strip()
        return self.device

    def mount(self, mount_point, read_only=False):
        """Mount the attached drive with exfat-fuse at `mount_point` (created if missing)."""
        os.makedirs(mount_point, exist_ok=True)
        command = ["mount.exfat-fuse"] + (["-o", "ro"] if read_only else []) + [self.device, str(mount_point)]
        _run(*command)
        self.mount_point = str(mount_point)
        return self.mount_point

    def unmount(self):
        """Unmount cleanly (flushes what was written)."""
        if self.mount_point and mounted_at(self.mount_point):
            _run("umount", self.mount_point)
            _wait(lambda: not fuse_pids(self.mount_point), 10, "exfat-fuse to exit")
        self.mount_point = None

    def detach(self):
        """Detach the loop device and wait until the kernel has let it go (blkid no longer finds it)."""
        if self.device is None:
            return
        name = os.path.basename(self.device)
        _run("losetup", "-d", self.device, check=False)
        _wait(lambda: not os.path.exists(f"/sys/block/{name}/loop/backing_file"), 20, f"{self.device} to detach")
        self.device = None

    def kill_mount(self, mount_point=None):
        """End the FUSE mount under any reader (ENOTCONN from then on) and clear it; the loop device stays.

        `mount_point` is where the drive is mounted if someone else (the source) mounted it.
        """
        where = mount_point or self.mount_point
        if where:
            end_fuse_mount(where)
            lazy_unmount(where)
        self.mount_point = None

    def unplug(self, mount_point=None):
        """Pull the drive out: kill_mount(), then detach the loop device. Readers must have let go of their files
        (a file open on the dead mount keeps the device attached)."""
        self.kill_mount(mount_point)
        self.detach()

    def write_files(self, files, seed=0):
        """Mount read-write, write `files` ({relative path: size}) with seeded random bytes, unmount.

        Returns {relative path: sha256 hex} of what was written. Needs the drive attached and not mounted.
        """
        staging = self.image + ".mnt"
        self.mount(staging)
        digests = {}
        try:
            generator = random.Random(seed)
            for path, size in files.items():
                full = os.path.join(staging, *path.split("/"))
                os.makedirs(os.path.dirname(full), exist_ok=True)
                digest = hashlib.sha256()
                with open(full, "wb") as handle:
                    left = size
                    while left:
                        block = generator.randbytes(min(left, 1 << 20))
                        handle.write(block)
                        digest.update(block)
                        left -= len(block)
                digests[path] = digest.hexdigest()
        finally:
            self.unmount()
        return digests

    def cleanup(self):
        """Unmount and detach whatever is left, ignoring what is already gone."""
        for where in filter(None, (self.mount_point, self.image + ".mnt")):
            with contextlib.suppress(Exception):
                end_fuse_mount(where)
            with contextlib.suppress(Exception):
                lazy_unmount(where)
        self.mount_point = None
        with contextlib.suppress(Exception):
            self.detach()
        self.device = None


@contextlib.contextmanager
def exfat_drive(directory, label, serial, size_mb=64):
    """A formatted ExfatDrive whose image lives in `directory`; unmounted and detached afterwards, even on failure."""
    drive = ExfatDrive(os.path.join(str(directory), f"{label}-{serial:08x}.img"), label, serial, size_mb)
    try:
        drive.format()
        yield drive
    finally:
        drive.cleanup()


class _Layout:
    """The few boot-sector fields needed to walk an exFAT image (exFAT specification, section 3.1)."""

    def __init__(self, handle):
        handle.seek(0)
        boot = handle.read(512)
        if boot[3:11] != b"EXFAT   ":
            raise ValueError("not an exFAT image")
        fat_offset, _, heap_offset, self.cluster_count, self.root_cluster = struct.unpack_from("<IIIII", boot, 80)
        self.sector_size = 1 << boot[108]
        self.cluster_size = self.sector_size << boot[109]
        self.fat_start = fat_offset * self.sector_size
        self.heap_start = heap_offset * self.sector_size
        self.handle = handle

    def fat_entry(self, cluster):
        self.handle.seek(self.fat_start + 4 * cluster)
        return struct.unpack("<I", self.handle.read(4))[0]

    def set_fat_entry(self, cluster, value):
        self.handle.seek(self.fat_start + 4 * cluster)
        self.handle.write(struct.pack("<I", value))

    def read_chain(self, first, contiguous, length):
        """The bytes of an allocation that starts at cluster `first`."""
        clusters = []
        cluster = first
        needed = max(1, -(-length // self.cluster_size)) if length else None
        while 2 <= cluster < self.cluster_count + 2 and (needed is None or len(clusters) < needed):
            clusters.append(cluster)
            cluster = cluster + 1 if contiguous else self.fat_entry(cluster)
        data = b""
        for cluster in clusters:
            self.handle.seek(self.heap_start + (cluster - 2) * self.cluster_size)
            data += self.handle.read(self.cluster_size)
        return data

    def entries(self, first, contiguous, length):
        """(name, is_directory, first_cluster, contiguous, data_length) of each file in a directory."""
        data = self.read_chain(first, contiguous, length)
        index = 0
        while index + 32 <= len(data):
            kind = data[index]
            if kind == 0:
                return
            if kind != 0x85:
                index += 32
                continue
            secondary = data[index + 1]
            attributes = struct.unpack_from("<H", data, index + 4)[0]
            stream = data[index + 32:index + 64]
            flags, name_length = stream[1], stream[3]
            first_cluster, data_length = struct.unpack_from("<IQ", stream, 20)
            name = b"".join(data[index + 32 * k + 2:index + 32 * k + 32] for k in range(2, secondary + 1))
            yield (name.decode("utf-16-le")[:name_length], bool(attributes & 0x10), first_cluster, bool(flags & 2),
                   data_length)
            index += 32 * (secondary + 1)

    def find(self, path):
        """The directory entry fields of `path` ('/'-separated, from the root)."""
        first, contiguous, length = self.root_cluster, False, 0
        found = None
        for part in path.split("/"):
            found = next((e for e in self.entries(first, contiguous, length) if e[0].lower() == part.lower()), None)
            if found is None:
                raise FileNotFoundError(path)
            _, _, first, contiguous, length = found
        return found


def fragment_file(drive, path, size, seed=1):
    """Write `path` so that exfat-fuse must keep it as a FAT cluster chain (not contiguous).

    exfat-fuse stores a file contiguously while it can grow in place; writing a one-cluster blocker file between the
    first and the second cluster of `path` forces it onto a chain. Returns the sha256 of the file's bytes.
    Needs the drive attached and not mounted.
    """
    staging = drive.image + ".mnt"
    drive.mount(staging)
    generator = random.Random(seed)
    content = generator.randbytes(size)
    try:
        full = os.path.join(staging, *path.split("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as handle:
            handle.write(content[:4096])
        with open(full + ".blocker", "wb") as handle:
            handle.write(b"x" * 4096)
        with open(full, "ab") as handle:
            handle.write(content[4096:])
        os.remove(full + ".blocker")
    finally:
        drive.unmount()
    return hashlib.sha256(content).hexdigest()


def break_cluster_chain(drive, path):
    """Mark the FAT entry after `path`'s first cluster as a bad cluster, as a failing drive leaves it.

    The file still lists with its size and its first cluster reads; reading further makes exfat-fuse log
    "invalid cluster 0x... while reading" and fail the read with EIO. Needs the drive detached (the loop device
    would cache the old FAT). Returns the cluster size: the first byte offset that fails.
    """
    assert drive.device is None, "detach the drive before editing its image"
    with open(drive.image, "r+b") as handle:
        layout = _Layout(handle)
        _, is_directory, first, contiguous, length = layout.find(path)
        if is_directory or contiguous or length <= layout.cluster_size:
            raise ValueError(f"{path} must be a file on a FAT chain longer than one cluster (use fragment_file)")
        layout.set_fat_entry(first, BAD_CLUSTER)
        return layout.cluster_size
