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

from filesync.devices import create_source
from filesync.devices.drive import DriveSource, mounts
from filesync.errors import ConfigError, DeviceUnavailable, FileError, PermanentError, TransientError
from support.exfat_drive import (break_cluster_chain, end_fuse_mount, exfat_drive, fragment_file, lazy_unmount,
                                 missing_tools, mounted_at, unavailable_reason)

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _tools():
    missing = missing_tools()
    if missing:
        pytest.fail(f"install the Debian packages {' '.join(missing)} (apt-get install -y {' '.join(missing)})")


def unique_serial():
    """Drives of concurrent test runs must never share a UUID: blkid sees every loop device on the machine."""
    return random.SystemRandom().getrandbits(32) | 0x10000000


def unique_label():
    return f"T{random.SystemRandom().getrandbits(36):09X}"[:11]


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
    with pytest.raises(ConfigError) as raised:
        create_source("cam", {"kind": "drive", **options})
    message = str(raised.value)
    assert message.startswith(key + ":") and text in message and "\n" not in message


def test_registry_builds_the_drive_source():
    assert isinstance(create_source("cam", {"kind": "drive", "label": "FLIR"}), DriveSource)
