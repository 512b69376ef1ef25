"""The `drive` source on a real exFAT file system: an image on a loop device, mounted with exfat-fuse.

Unplugging ends the FUSE mount under the reader (ENOTCONN), clears it and detaches the loop device, as FACTS.md
records for a hot-unplug; a bad file has its FAT cluster chain broken in the image, so exfat-fuse itself answers
"invalid cluster" (EIO). See support/exfat_drive.py.
"""
import hashlib
import os
import queue
import random
import threading
import time
from contextlib import closing

import pytest

from conftest import assert_config_error
from filesync.devices import create_source
from filesync.devices.drive import DriveSource, mounts
from filesync.engine.runner import LocalRunner
from filesync.errors import DeviceUnavailable, FileError, PermanentError, TransientError
from support.exfat_drive import (break_cluster_chain, end_fuse_mount, exfat_drive, fragment_file, lazy_unmount,
                                 missing_tools, mounted_at, unavailable_reason, unique_label, unique_serial)

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _tools():
    missing = missing_tools()
    if missing:
        pytest.fail(f"install the Debian packages {' '.join(missing)} (apt-get install -y {' '.join(missing)})")


def sha256_of(chunks):
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def source_for(drive=None, **options):
    """A drive source for `drive`'s UUID (or the label given in options)."""
    if drive is not None and "label" not in options:
        options["uuid"] = drive.uuid
    return create_source("cam", {"kind": "drive", **options})


def test_lists_and_reads_a_real_exfat_drive(tmp_path):
    with exfat_drive(tmp_path, unique_label(), unique_serial()) as drive:
        drive.attach()
        digests = drive.write_files({"DCIM/100FLIR/clip1.MP4": 3 * MiB + 17, "DCIM/100FLIR/clip1.jpg": 2000,
                                     "DCIM/100FLIR/THUMBS/clip1.MP4": 100, "notes.txt": 10})
        drive.mount(tmp_path / "auto", read_only=True)  # as an automounter would
        source = source_for(drive, include=["*.mp4", "*.jpg"], exclude=["*/THUMBS/*"])
        source.probe()
        listing = {f.path: f for f in source.list()}
        prefix = drive.uuid + "/"
        assert sorted(listing) == [prefix + "DCIM/100FLIR/clip1.MP4", prefix + "DCIM/100FLIR/clip1.jpg"]
        clip = listing[prefix + "DCIM/100FLIR/clip1.MP4"]
        assert clip.size == 3 * MiB + 17 and clip.complete
        assert source.stat(clip.path).size == clip.size
        assert sha256_of(source.read(clip.path, 0)) == digests["DCIM/100FLIR/clip1.MP4"]
        head = b"".join(source.read(clip.path, 0))[:MiB + 5]
        assert sha256_of([head, *source.read(clip.path, MiB + 5)]) == digests["DCIM/100FLIR/clip1.MP4"]
        assert list(source.read(clip.path, clip.size)) == []
        with pytest.raises(PermanentError):
            list(source.read(prefix + "DCIM/gone.MP4", 0))


def test_min_age_waits_until_a_file_stops_changing(tmp_path):
    with exfat_drive(tmp_path, unique_label(), unique_serial()) as drive:
        drive.attach()
        drive.write_files({"a.MP4": 1000})
        drive.mount(tmp_path / "auto", read_only=True)
        source = source_for(drive, min_age=0.5)
        assert [f.complete for f in source.list()] == [False]
        time.sleep(0.6)
        assert [f.complete for f in source.list()] == [True]


def test_removal_mid_read_pauses_and_the_read_resumes_from_its_offset_after_replug(tmp_path):
    with exfat_drive(tmp_path, unique_label(), unique_serial()) as drive:
        drive.attach()
        digests = drive.write_files({"DCIM/clip.MP4": 12 * MiB})
        drive.mount(tmp_path / "first", read_only=True)
        source = source_for(drive)
        path = f"{drive.uuid}/DCIM/clip.MP4"
        received = []
        with closing(source.read(path, 0)) as chunks:
            received += [next(chunks), next(chunks)]
            drive.kill_mount()  # the daemon dies while the file is open: ENOTCONN
            with pytest.raises(DeviceUnavailable) as raised:
                received += list(chunks)
        assert "went away" in str(raised.value)
        drive.detach()
        for call in (source.probe, source.list, lambda: list(source.read(path, 0))):
            with pytest.raises(DeviceUnavailable):
                call()
        offset = sum(map(len, received))
        assert 0 < offset < 12 * MiB
        drive.attach()  # plugged in again, mounted elsewhere this time
        drive.mount(tmp_path / "second", read_only=True)
        source.probe()
        assert sha256_of([*received, *source.read(path, offset)]) == digests["DCIM/clip.MP4"]


def test_mount_true_mounts_read_only_and_clears_a_dead_mount(tmp_path):
    mount_point = str(tmp_path / "media" / "cam")
    with exfat_drive(tmp_path, unique_label(), unique_serial()) as drive:
        drive.attach()
        digests = drive.write_files({"clip.MP4": 5 * MiB})
        source = source_for(drive, mount=True, mount_point=mount_point)
        try:
            source.probe()
            mine = [m for m in mounts() if m.point == mount_point]
            assert len(mine) == 1 and mine[0].fstype == "fuseblk"
            with pytest.raises(OSError):  # mounted read-only
                open(os.path.join(mount_point, "new.txt"), "wb").close()
            path = f"{drive.uuid}/clip.MP4"
            with closing(source.read(path, 0)) as chunks:
                first = next(chunks)
                end_fuse_mount(mount_point)  # the FUSE daemon dies, the loop device stays: replugged at once
                with pytest.raises(DeviceUnavailable):
                    list(chunks)
            source.probe()  # clears the dead mount and mounts again
            assert sha256_of([first, *source.read(path, len(first))]) == digests["clip.MP4"]

            end_fuse_mount(mount_point)
            source.close()  # what the engine does on DeviceUnavailable: the dead mount goes
            assert not mounted_at(mount_point)
            drive.detach()
            with pytest.raises(DeviceUnavailable, match="no drive"):
                source.probe()
            assert not mounted_at(mount_point)
            drive.attach()
            source.probe()
            assert mounted_at(mount_point)
            assert sha256_of(source.read(path, 0)) == digests["clip.MP4"]
            with pytest.raises(PermanentError, match="writable"):
                source.delete(path)
        finally:
            lazy_unmount(mount_point)


def test_delete_needs_a_writable_mount(tmp_path):
    mount_point = str(tmp_path / "media" / "cam")
    with exfat_drive(tmp_path, unique_label(), unique_serial()) as drive:
        drive.attach()
        drive.write_files({"DCIM/a.MP4": 100, "DCIM/b.MP4": 100})
        source = source_for(drive, mount=True, mount_point=mount_point, writable=True)
        try:
            source.delete(f"{drive.uuid}/DCIM/a.MP4")
            source.delete(f"{drive.uuid}/DCIM/a.MP4")  # already gone: nothing to do
            assert [f.path for f in source.list()] == [f"{drive.uuid}/DCIM/b.MP4"]
        finally:
            drive.mount_point = mount_point
            drive.unmount()  # a clean unmount: exfat-fuse writes everything out
        drive.mount(tmp_path / "check", read_only=True)
        assert os.listdir(tmp_path / "check" / "DCIM") == ["b.MP4"]  # the removal reached the drive


def test_another_drive_with_the_same_label_and_paths_is_other_files(tmp_path):
    label = unique_label()
    with exfat_drive(tmp_path, label, unique_serial()) as first, exfat_drive(tmp_path, label, unique_serial()) as other:
        for drive in (first, other):
            drive.attach()
            drive.write_files({"DCIM/clip.MP4": 4096, "DCIM/pic.jpg": 10})
            drive.detach()
        source = source_for(label=label)
        first.attach()
        first.mount(tmp_path / "a", read_only=True)
        seen_first = {f.path for f in source.list()}
        first.unplug()
        other.attach()
        other.mount(tmp_path / "b", read_only=True)
        seen_other = {f.path for f in source.list()}
        assert seen_first == {f"{first.uuid}/DCIM/clip.MP4", f"{first.uuid}/DCIM/pic.jpg"}
        assert seen_other == {f"{other.uuid}/DCIM/clip.MP4", f"{other.uuid}/DCIM/pic.jpg"}
        # A file of the first drive waits for that drive; it is not read from the other one.
        with pytest.raises(TransientError, match="not plugged in") as raised:
            list(source.read(f"{first.uuid}/DCIM/clip.MP4", 0))
        assert not isinstance(raised.value, DeviceUnavailable)  # the other drive's files go on meanwhile
        by_uuid = source_for(first)
        with pytest.raises(DeviceUnavailable):
            by_uuid.list()


def test_a_file_with_a_broken_cluster_chain_fails_alone(tmp_path):
    with exfat_drive(tmp_path, unique_label(), unique_serial()) as drive:
        drive.attach()
        fragment_file(drive, "DCIM/bad.MP4", 3 * MiB)
        digests = drive.write_files({"DCIM/good.MP4": 2 * MiB})
        drive.detach()
        cluster = break_cluster_chain(drive, "DCIM/bad.MP4")
        drive.attach()
        drive.mount(tmp_path / "auto", read_only=True)
        source = source_for(drive)
        assert {f.path: f.size for f in source.list()} == {f"{drive.uuid}/DCIM/bad.MP4": 3 * MiB,
                                                           f"{drive.uuid}/DCIM/good.MP4": 2 * MiB}
        for _ in range(3):  # it keeps failing, and is never mistaken for a pulled drive
            with pytest.raises(FileError, match="Input/output error") as raised:
                list(source.read(f"{drive.uuid}/DCIM/bad.MP4", 0))
            assert "still there" in str(raised.value)
        with pytest.raises(FileError):
            list(source.read(f"{drive.uuid}/DCIM/bad.MP4", cluster))
        assert sha256_of(source.read(f"{drive.uuid}/DCIM/good.MP4", 0)) == digests["DCIM/good.MP4"]


@pytest.mark.parametrize("options, key, text", [
    ({}, "sources.cam.uuid", "required"),
    ({"uuid": "1234-ABCD", "label": "CAM"}, "sources.cam.uuid", "not both"),
    ({"uuid": "/dev/sda1"}, "sources.cam.uuid", "device path"),
    ({"label": "/dev/disk/by-label/CAM"}, "sources.cam.label", "device path"),
    ({"uuid": "12 34"}, "sources.cam.uuid", "not a file system UUID"),
    ({"uuid": "1234-ABCD", "mount": True}, "sources.cam.mount_point", "required when mount"),
    ({"uuid": "1234-ABCD", "writable": True}, "sources.cam.writable", "only when mount"),
    ({"uuid": "1234-ABCD", "mount": "yes", "mount_point": "/mnt/x"}, "sources.cam.mount", "true or false"),
    ({"uuid": "1234-ABCD", "include": "*.MP4"}, "sources.cam.include", "a list"),
    ({"uuid": "1234-ABCD", "exclude": [7]}, "sources.cam.exclude", "glob"),
    ({"uuid": "1234-ABCD", "min_age": -1}, "sources.cam.min_age", "0 or more"),
    ({"uuid": "1234-ABCD", "device": "/dev/sda1"}, "sources.cam.device", "unknown key"),
])
def test_bad_config_is_one_line_naming_the_key(options, key, text):
    assert_config_error(lambda: create_source("cam", {"kind": "drive", **options}), key, text)


def test_registry_builds_the_drive_source():
    assert isinstance(create_source("cam", {"kind": "drive", "label": "FLIR"}), DriveSource)


# Through the whole engine (LocalRunner): drive -> staging -> a folder target.

def pipeline_config(tmp_path, source, **extra):
    os.makedirs(tmp_path / "target", exist_ok=True)
    config = {"staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
              "checkpoint_bytes": 256 * 1024, "scan_interval": 0.5, "poll_interval": 0.5,
              "retry_base": 0.2, "retry_cap": 1.0, "lease_seconds": 20.0, "max_attempts": 3,
              "sources": {"cam": {"kind": "drive", **source}},
              "targets": {"disk": {"kind": "folder", "path": str(tmp_path / "target")}},
              "pipelines": [{"source": "cam", "targets": ["disk"]}]}
    config.update(extra)
    return config


def sha256_file(path):
    with open(path, "rb") as handle:
        return sha256_of(iter(lambda: handle.read(MiB), b""))


class PullingReads:
    """Wraps DriveSource.read to count the bytes the engine takes from the drive and the offsets it asks for, and to
    hold the reader, every `every` bytes, right after a chunk while the test pulls the drive out under it.

    The bytes and the errors still come from the real file system; only the moment of the unplug is chosen here.
    """

    def __init__(self, original, every, pulls):
        self.original, self.every, self.pulls_left = original, every, pulls
        self.lock = threading.Lock()
        self.bytes_read = 0
        self.offsets = {}
        self.next_pull = every
        self.requests = queue.Queue()

    def read(self, source, path, offset):
        with self.lock:
            self.offsets.setdefault(path, []).append(offset)
        with closing(self.original(source, path, offset)) as chunks:
            for chunk in chunks:
                with self.lock:
                    self.bytes_read += len(chunk)
                    pull = self.pulls_left > 0 and self.bytes_read >= self.next_pull
                    if pull:
                        self.pulls_left -= 1
                        self.next_pull += self.every
                yield chunk
                if pull:  # the engine has this chunk; the next read from the drive comes after the unplug
                    pulled = threading.Event()
                    self.requests.put(pulled)
                    pulled.wait(120)


def test_twenty_unplugs_during_a_200_mb_copy_lose_nothing_and_restart_nothing(tmp_path, monkeypatch):
    rng = random.Random(5)
    files = {f"DCIM/100FLIR/FLIR{i:04d}.MP4": 24 * MiB + rng.randrange(MiB) for i in range(8)}
    files.update({f"DCIM/100FLIR/FLIR{i:04d}.jpg": rng.randrange(50_000, 400_000) for i in range(8)})
    total = sum(files.values())
    cycles = 20
    with exfat_drive(tmp_path, unique_label(), unique_serial(), size_mb=256) as drive:
        drive.attach()
        digests = drive.write_files(files)
        drive.mount(tmp_path / "mnt-0", read_only=True)
        reads = PullingReads(DriveSource.read, total // (cycles + 1), cycles)
        monkeypatch.setattr(DriveSource, "read", lambda source, path, offset: reads.read(source, path, offset))
        # one copy at a time, so every unplug cuts the one read that reached its point: with several, an unplug also
        # cuts the others, and one cut before its first checkpoint starts from zero again (within the README's bound
        # of a checkpoint per transfer in progress, but not "restart nothing")
        runner = LocalRunner(pipeline_config(tmp_path, {"uuid": drive.uuid, "transfers": 1}))
        try:
            runner.start()
            for cycle in range(1, cycles + 1):
                try:
                    pulled = reads.requests.get(timeout=120)
                except queue.Empty:
                    pytest.fail(f"no read reached the next unplug point after {cycle - 1} cycles: "
                                f"{[(r.path, r.state, r.error) for r in runner.ledger.files()]}")
                drive.kill_mount()  # the FUSE mount ends under the reader
                pulled.set()
                drive.detach()  # returns once the engine let go of the dead mount
                time.sleep(rng.uniform(0.0, 1.0))  # the engine finds the drive gone meanwhile
                drive.attach()  # back, possibly as another /dev/loopN, mounted elsewhere (as an automounter would)
                drive.mount(tmp_path / f"mnt-{cycle % 2}", read_only=True)
            runner.run_until_settled(timeout=180)
            records = runner.ledger.files()
        finally:
            runner.close()
    assert sorted(r.path for r in records) == sorted(f"{drive.uuid}/{path}" for path in files)
    assert {r.state for r in records} == {"uploaded"}, [(r.path, r.state, r.error) for r in records]
    for path, digest in digests.items():
        assert sha256_file(tmp_path / "target" / drive.uuid / path) == digest, path
    assert reads.pulls_left == 0
    resumed = 0
    for path, offsets in reads.offsets.items():
        assert offsets.count(0) == 1, f"{path} started from zero again: {offsets}"
        assert offsets == sorted(offsets), f"{path}: the checkpoint went back: {offsets}"
        resumed += len(offsets) - 1
    assert resumed >= cycles  # every unplug interrupted a copy, which went on from its checkpoint
    # Each unplug costs at most the chunk in flight beyond the last checkpoint.
    assert reads.bytes_read - total <= cycles * MiB, (reads.bytes_read, total)
    print(f"read {reads.bytes_read} bytes for {total} ({resumed} resumed reads, {cycles} unplugs)")


def test_a_file_that_keeps_failing_is_parked_with_its_reason_and_the_others_arrive(tmp_path):
    with exfat_drive(tmp_path, unique_label(), unique_serial()) as drive:
        drive.attach()
        fragment_file(drive, "DCIM/bad.MP4", 2 * MiB)
        digests = drive.write_files({"DCIM/good1.MP4": 3 * MiB, "DCIM/good2.MP4": 100_000})
        drive.detach()
        break_cluster_chain(drive, "DCIM/bad.MP4")
        drive.attach()
        drive.mount(tmp_path / "auto", read_only=True)
        runner = LocalRunner(pipeline_config(tmp_path, {"uuid": drive.uuid}))
        try:
            runner.start()
            # Not run_until_settled(): the parked file's upload task stays 'waiting' behind its download for ever.
            deadline = time.monotonic() + 120
            while not (len(runner.ledger.files()) == 3 and
                       {r.state for r in runner.ledger.files()} <= {"uploaded", "failed"}):
                assert time.monotonic() < deadline, [(r.path, r.state, r.error) for r in runner.ledger.files()]
                time.sleep(0.1)
            records = {r.path: r for r in runner.ledger.files()}
        finally:
            runner.close()
    bad = records.pop(f"{drive.uuid}/DCIM/bad.MP4")
    assert bad.state == "failed" and "Input/output error" in bad.error and "file system error" in bad.error
    assert bad.task("download").attempts == 3
    assert {r.state for r in records.values()} == {"uploaded"}
    for path, digest in digests.items():
        assert sha256_file(tmp_path / "target" / drive.uuid / path) == digest


def test_a_second_drive_with_the_same_paths_brings_new_files(tmp_path):
    label = unique_label()
    with exfat_drive(tmp_path, label, unique_serial()) as first, exfat_drive(tmp_path, label, unique_serial()) as other:
        digests = {}
        for seed, drive in enumerate((first, other)):
            drive.attach()
            digests[drive.uuid] = drive.write_files({"DCIM/clip.MP4": 300_000, "DCIM/pic.jpg": 5000}, seed=seed)
            drive.detach()
        first.attach()
        first.mount(tmp_path / "media", read_only=True)
        runner = LocalRunner(pipeline_config(tmp_path, {"label": label}))
        try:
            runner.run_until_settled(timeout=60)
            first.unplug()
            other.attach()
            other.mount(tmp_path / "media", read_only=True)
            deadline = time.monotonic() + 60
            while len(runner.ledger.files()) < 4:
                assert time.monotonic() < deadline, "the second drive's files were not found"
                time.sleep(0.1)
            runner.run_until_settled(timeout=60)
            records = runner.ledger.files()
        finally:
            runner.close()
    assert len(records) == 4 and {r.state for r in records} == {"uploaded"}
    for uuid, files in digests.items():
        for path, digest in files.items():
            assert sha256_file(tmp_path / "target" / uuid / path) == digest
    assert digests[first.uuid] != digests[other.uuid]
