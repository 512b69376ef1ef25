"""The `drive` target on a real exFAT file system: an image on a loop device, mounted with exfat-fuse (by the target
itself, read-write, or by the test as an automounter would). Pulling the drive out ends the FUSE mount under the
writer (ENOTCONN) and detaches the loop device, as FACTS.md records for a hot-unplug; see support/exfat_drive.py."""
import hashlib
import io
import os
import queue
import random
import re
import threading
import time

import pytest
import yaml

from conftest import assert_config_error
from filesync.config import load_config
from filesync.devices import create_source, create_target
from filesync.devices.drive import DriveTarget, check_fits, fat_name, mounts
from filesync.engine.runner import LocalRunner
from filesync.engine.workers import TaskWorker
from filesync.errors import DeviceUnavailable, FinalNameTaken, PermanentError, TransientError, UnsafePath
from filesync.paths import device_name, safe_name
from support.exfat_drive import (exfat_drive, lazy_unmount, missing_tools, mounted_at, unavailable_reason,
                                 unique_label, unique_serial)
from support.nginx import Nginx, missing as nginx_missing

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _tools():
    missing = missing_tools()
    if missing:
        pytest.fail(f"install the Debian packages {' '.join(missing)} (apt-get install -y {' '.join(missing)})")


def target_for(drive=None, **options):
    if drive is not None and "label" not in options:
        options["uuid"] = drive.uuid
    return create_target("sd", {"kind": "drive", **options})


def data_of(name, size):
    return random.Random(name).randbytes(size)


def upload(target, path, data, offset=0, stream=None):
    seen = []
    stream = stream or io.BytesIO(data[offset:])
    target.write(path, stream, offset, len(data), lambda done, note=None: seen.append(done))
    return seen


def sha256_of(data):
    return hashlib.sha256(data).hexdigest()


class PullingStream(io.BytesIO):
    """The staged file as write() reads it; once `after` bytes have gone out it runs `pull` (the drive is pulled
    out while the writer holds the part open), so the writer's next write meets the dead mount."""

    def __init__(self, data, after, pull):
        super().__init__(data)
        self.after, self.pull = after, pull
        self.pulled_at = None  # how many bytes the writer had been given when the drive was pulled

    def read(self, size=-1):
        if self.pull and self.tell() >= self.after:
            self.pulled_at = self.tell()
            self.pull()
            self.pull = None
        return super().read(size)


def test_writes_publishes_and_verifies_on_a_drive_it_mounts_read_write(tmp_path):
    mount_point = str(tmp_path / "media" / "sd")
    with exfat_drive(tmp_path, unique_label(), unique_serial()) as drive:
        drive.attach()
        target = target_for(drive, mount=True, mount_point=mount_point, root="CONFIG/camera")
        try:
            target.probe()
            [mine] = [m for m in mounts() if m.point == mount_point]
            assert mine.fstype == "fuseblk" and not mine.read_only
            data = data_of("cfg", 3 * MiB + 5)
            assert target.stat("duo/settings.json") is None and target.held("duo/settings.json") == 0
            seen = upload(target, "duo/settings.json", data)
            assert seen[-1] == len(data) and seen == sorted(seen)
            folder = os.path.join(mount_point, "CONFIG", "camera", "duo")
            assert os.listdir(folder) == ["settings.json.part"] and target.held("duo/settings.json") == len(data)
            location = target.publish("duo/settings.json", len(data))
            assert location == f"drive:{drive.uuid}/CONFIG/camera/duo/settings.json"
            assert target.location("duo/settings.json") == location
            assert os.listdir(folder) == ["settings.json"]
            assert target.stat("duo/settings.json") == len(data)
            assert target.digest("duo/settings.json", "sha256") == sha256_of(data)
            assert b"".join(target.read("duo/settings.json")) == data
            target.delete("duo/settings.json")
            target.delete("duo/settings.json")  # already gone
            assert target.stat("duo/settings.json") is None
        finally:
            target.close()
            drive.mount_point = mount_point
            drive.unmount()  # a clean unmount: exfat-fuse writes everything out


def test_names_fat_refuses_are_written_escaped_and_read_back_exactly(tmp_path):
    with exfat_drive(tmp_path, unique_label(), unique_serial()) as drive:
        drive.attach()
        root = drive.mount(tmp_path / "auto")
        target = target_for(drive)
        originals = ['mission: "A"?.plan', "a<b>|c*.txt", "ends with dot.", "ends with space ", "back\\slash",
                     "new\nline.txt", "50%.txt", "per%41cent.txt", "日本語.txt", "dir:1/x.bin"]
        for original in originals:
            path = safe_name(original)  # what the engine gives a target
            upload(target, path, original.encode())
            target.publish(path, len(original.encode()))
            on_drive = fat_name(path)
            with open(os.path.join(root, *on_drive.split("/")), "rb") as handle:
                assert handle.read() == original.encode(), on_drive
            assert device_name(on_drive) == original  # the mapping is reversible
            assert target.stat(path) == len(original.encode())
        assert sorted(os.listdir(root)) == sorted(fat_name(safe_name(name)).split("/")[0] for name in originals)
        assert fat_name('mission: "A"?.plan') == "mission%3A %22A%22%3F.plan"
        assert fat_name("ends with dot.") == "ends with dot%2E" and fat_name("a./b ") == "a%2E/b%20"
        with pytest.raises(UnsafePath, match="over 255 bytes"):
            fat_name(":" * 100)  # 100 bytes as a safe name, 300 on the drive


def test_publish_never_replaces_another_file_and_names_differing_in_case_are_one(tmp_path):
    with exfat_drive(tmp_path, unique_label(), unique_serial()) as drive:
        drive.attach()
        root = drive.mount(tmp_path / "auto")
        target = target_for(drive)
        with open(os.path.join(root, "Taken.BIN"), "wb") as handle:
            handle.write(b"theirs")
        assert target.stat("taken.bin") == 6  # exFAT compares names without case
        upload(target, "taken.bin", b"ours!!")
        with pytest.raises(FinalNameTaken):
            target.publish("taken.bin", 6)
        with open(os.path.join(root, "Taken.BIN"), "rb") as handle:
            assert handle.read() == b"theirs"
        assert target.held("taken.bin") == 6  # our upload waits, untouched
        target.publish("taken.bin", 6, replace=True)
        assert target.digest("taken.bin", "sha256") == sha256_of(b"ours!!")
        upload(target, "short.bin", b"abc")
        with pytest.raises(TransientError, match="expected 4"):
            target.publish("short.bin", 4)


def test_a_drive_mounted_read_only_is_waited_for_with_the_reason(tmp_path):
    with exfat_drive(tmp_path, unique_label(), unique_serial()) as drive:
        drive.attach()
        drive.mount(tmp_path / "auto", read_only=True)  # an automounter's choice
        target = target_for(drive, mount=True, mount_point=str(tmp_path / "mine"))
        for call in (target.probe, lambda: target.stat("a.bin"), lambda: upload(target, "a.bin", b"x")):
            with pytest.raises(DeviceUnavailable, match="mounted read-only at") as raised:
                call()
            assert "\n" not in str(raised.value)
        assert not mounted_at(str(tmp_path / "mine"))  # not mounted a second time


def test_pulled_mid_write_the_same_drive_resumes_from_what_it_holds(tmp_path):
    mount_point = str(tmp_path / "media" / "sd")
    data = data_of("clip", 9 * MiB + 123)
    with exfat_drive(tmp_path, unique_label(), unique_serial()) as drive:
        drive.attach()
        target = target_for(drive, mount=True, mount_point=mount_point)
        try:
            target.probe()
            stream = PullingStream(data, 5 * MiB + 7, lambda: drive.kill_mount(mount_point))
            with pytest.raises(DeviceUnavailable, match="went away while writing big.bin.part") as raised:
                upload(target, "big.bin", data, stream=stream)
            assert "Transport endpoint is not connected" in str(raised.value)
            target.close()  # what the worker does on DeviceUnavailable: the dead mount goes
            assert not mounted_at(mount_point)
            drive.detach()
            for call in (target.probe, lambda: target.held("big.bin"), lambda: target.stat("big.bin")):
                with pytest.raises(DeviceUnavailable, match="no drive"):
                    call()
            drive.attach()  # back, perhaps as another /dev/loopN
            held = target.held("big.bin")
            assert stream.pulled_at - MiB <= held <= stream.pulled_at  # fsynced before the pull: at most 1 MiB lost
            assert held > 0
            assert target.stat("big.bin") is None  # nothing published half
            upload(target, "big.bin", data, offset=held)
            target.publish("big.bin", len(data))
            assert target.digest("big.bin", "sha256") == sha256_of(data)
        finally:
            target.close()
            lazy_unmount(mount_point)


def test_another_drive_with_the_label_never_gets_the_rest_of_a_file(tmp_path):
    label = unique_label()
    data = data_of("cfg", 4 * MiB)
    with exfat_drive(tmp_path, label, unique_serial()) as first, exfat_drive(tmp_path, label, unique_serial()) as other:
        first.attach()
        first.mount(tmp_path / "a")
        target = target_for(label=label)
        with pytest.raises(TransientError):
            upload(target, "cfg.bin", data, stream=PullingStream(data, 2 * MiB, lambda: (_ for _ in ()).throw(
                TransientError("the local stream broke"))))
        assert target.held("cfg.bin") == 2 * MiB
        first.unmount()
        first.detach()
        other.attach()
        other.mount(tmp_path / "b")
        assert target.held("cfg.bin") == 0  # the part is on the first drive
        with pytest.raises(TransientError, match="holds 0 bytes") as raised:
            upload(target, "cfg.bin", data, offset=2 * MiB)  # held() was asked before the swap
        assert not isinstance(raised.value, DeviceUnavailable)
        assert target.held("cfg.bin") == 0  # nothing written at an offset the drive does not hold
        upload(target, "cfg.bin", data)
        assert target.publish("cfg.bin", len(data)) == f"drive:{other.uuid}/cfg.bin"
        assert target.digest("cfg.bin", "sha256") == sha256_of(data)
        other.unmount()
        other.detach()
        first.attach()
        first.mount(tmp_path / "a")
        assert target.held("cfg.bin") == 2 * MiB and target.stat("cfg.bin") is None
        by_uuid = target_for(other)
        with pytest.raises(DeviceUnavailable, match=f"no drive with UUID {other.uuid}"):
            by_uuid.held("cfg.bin")


def test_fat32_takes_files_up_to_4_gib_less_a_byte():
    check_fits("vfat", (1 << 32) - 1, "a.mp4", "1234-ABCD")
    check_fits("exfat", 1 << 40, "a.mp4", "1234-ABCD")
    with pytest.raises(PermanentError, match="FAT32, which holds files up to 4 GiB - 1 byte"):
        check_fits("vfat", 1 << 32, "a.mp4", "1234-ABCD")


@pytest.mark.parametrize("options, key, text", [
    ({}, "targets.sd.uuid", "required"),
    ({"uuid": "1234-ABCD", "label": "SD"}, "targets.sd.uuid", "not both"),
    ({"uuid": "/dev/sdb1"}, "targets.sd.uuid", "device path"),
    ({"uuid": "1234-ABCD", "mount": True}, "targets.sd.mount_point", "required when mount"),
    ({"uuid": "1234-ABCD", "root": "../up"}, "targets.sd.root", "'..'"),
    ({"uuid": "1234-ABCD", "root": "cfg?"}, "targets.sd.root", "FAT and exFAT refuse"),
    ({"uuid": "1234-ABCD", "writable": True}, "targets.sd.writable", "unknown key"),
])
def test_bad_config_is_one_line_naming_the_key(options, key, text):
    assert_config_error(lambda: create_target("sd", {"kind": "drive", **options}), key, text)


def test_registry_builds_the_drive_target():
    target = create_target("sd", {"kind": "drive", "label": "SD"})
    assert isinstance(target, DriveTarget) and target.digests == ("sha256",) and target.readable
    assert target.location("a:b.txt") == "drive:SD/a%3Ab.txt"


# Through the whole engine (LocalRunner): an http source (nginx) -> staging -> the drive.

class PullingWrites:
    """Wraps DriveTarget.write to count the bytes the engine writes into the drive's .part and the offsets it starts
    from, and to hold the writer right after `pull_at` bytes while the test pulls the drive out under it, and again
    when the write has failed (the part is closed) until the test has detached the drive, so that the engine cannot
    find the drive again before it is gone. The bytes and the errors still come from the real file system; only the
    moments are chosen here."""

    def __init__(self, original, pull_at):
        self.original, self.pull_at = original, pull_at
        self.written = 0
        self.offsets = []
        self.pulls = queue.Queue()
        self.failures = queue.Queue()

    def _hold(self, channel, value):
        go_on = threading.Event()
        channel.put((value, go_on))
        go_on.wait(60)

    def write(self, target, path, stream, offset, size, progress):
        self.offsets.append((path, offset))
        last = [offset]

        def counting(done, note=None):
            self.written += done - last[0]
            last[0] = done
            if self.pull_at is not None and done >= self.pull_at:
                self.pull_at = None
                self._hold(self.pulls, done)  # the next write meets the dead mount
            progress(done) if note is None else progress(done, note)
        try:
            return self.original(target, path, stream, offset, size, counting)
        except DeviceUnavailable as error:
            self._hold(self.failures, error)
            raise


def pipeline(tmp_path, url, target):
    return {"staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
            "scan_interval": 0.3, "poll_interval": 0.3, "retry_base": 0.2, "retry_cap": 0.5,
            "sources": {"web": {"kind": "http", "url": url, "connect_timeout": 2.0}},
            "targets": {"sd": {"kind": "drive", **target}},
            "pipelines": [{"source": "web", "targets": ["sd"]}]}


def upload_worker(runner):
    [worker] = [loop for loop in runner.loops if isinstance(loop, TaskWorker) and loop.kind == "upload"]
    return worker


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what()
        time.sleep(0.05)


@pytest.fixture
def web(tmp_path):
    reason = nginx_missing()
    if reason:
        pytest.fail(reason)
    server = Nginx(str(tmp_path / "nginx"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_drive_pulled_mid_write_resumes_without_starting_over(tmp_path, web, monkeypatch):
    files = {"missions/survey.plan": data_of("plan", 20_000), "video/clip.bin": data_of("clip", 12 * MiB + 11)}
    for name, data in files.items():
        web.put(name, data)
    mount_point = str(tmp_path / "media" / "sd")
    writes = PullingWrites(DriveTarget.write, 5 * MiB)
    monkeypatch.setattr(DriveTarget, "write", lambda *args: writes.write(*args))
    with exfat_drive(tmp_path, unique_label(), unique_serial()) as drive:
        drive.attach()
        runner = LocalRunner(pipeline(tmp_path, web.url(), {"uuid": drive.uuid, "mount": True,
                                                            "mount_point": mount_point, "root": "FROM_WEB"}))
        try:
            worker = upload_worker(runner)
            links = []  # what the status shows of the drive, as it changes
            worker.notify = lambda: links.append((worker.link.up, worker.link.reason))
            runner.start()
            try:
                pulled_at, go_on = writes.pulls.get(timeout=60)
            except queue.Empty:
                pytest.fail(f"no write reached 5 MiB: {[(r.path, r.state, r.error) for r in runner.ledger.files()]}")
            drive.kill_mount(mount_point)  # pulled out while the engine writes
            go_on.set()
            error, go_on = writes.failures.get(timeout=30)
            drive.detach()
            go_on.set()
            wait_for(lambda: not worker.link.up and "no drive" in worker.link.reason, 30, lambda: links)
            time.sleep(0.5)
            assert not worker.link.up
            drive.attach()  # the same drive (same UUID) comes back
            runner.run_until_settled(timeout=60)
            records = {r.path: r for r in runner.ledger.files()}
            assert {r.state for r in records.values()} == {"uploaded"}, [(r.path, r.error) for r in records.values()]
            assert worker.link.up
            assert f"drive {drive.uuid} went away while writing video/clip.bin.part: Transport endpoint is not " \
                "connected" in str(error)
            down = [reason for up, reason in links if not up]
            assert down[0] == str(error) and "\n" not in down[0], links  # the line the status shows
            assert down[-1] == f"no drive with UUID {drive.uuid} is plugged in", links
            for name, data in files.items():
                with open(os.path.join(mount_point, "FROM_WEB", *name.split("/")), "rb") as handle:
                    assert sha256_of(handle.read()) == sha256_of(data), name
            assert records["video/clip.bin"].task("upload", "sd").location == \
                f"drive:{drive.uuid}/FROM_WEB/video/clip.bin"
            assert not [n for _, _, names in os.walk(mount_point) for n in names if n.endswith(".part")]
        finally:
            runner.close()
            drive.mount_point = mount_point
            drive.kill_mount(mount_point)
    clip = [offset for path, offset in writes.offsets if path == "video/clip.bin"]
    assert clip[0] == 0 and len(clip) == 2, clip
    assert pulled_at - MiB <= clip[1] <= pulled_at, (clip, pulled_at)  # resumed, not started over
    # every byte went to the drive once, but for what had not been fsynced when it was pulled (the README's promise:
    # at most 1 MiB moved again per interruption)
    assert sum(map(len, files.values())) <= writes.written <= sum(map(len, files.values())) + MiB
    print(f"pulled at {pulled_at}, resumed at {clip[1]}, wrote {writes.written} bytes for "
          f"{sum(map(len, files.values()))}")


def test_the_use_cases_load_and_their_devices_build(monkeypatch):
    """The YAML of the "Use cases" (docs/configuration.md, from the README; with each commented '# or:' alternative)
    is a valid configuration, and its http, ftp, folder and drive devices build (the vehicle targets are checked by
    their own tests)."""
    page = open(os.path.join(os.path.dirname(__file__), "..", "docs", "configuration.md"), encoding="utf-8").read()
    section = page.split("\n## Use cases\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    monkeypatch.setenv("GCS_TOKEN", "t")
    monkeypatch.setenv("GCS_PASSWORD", "p")
    built = set()
    for block in blocks:
        config = yaml.safe_load(block)
        load_config(config)
        alternatives = re.findall(r"^  # or(?: through MAVROS)?: (?:(\w+): )?(\{.*\})$", block, re.M)
        assert alternatives
        devices = [("sources", name, options) for name, options in config["sources"].items()]
        devices += [("targets", name, options) for name, options in config["targets"].items()]
        devices += [("alternative", name, yaml.safe_load(text)) for name, text in alternatives]
        for section_name, name, options in devices:
            if options["kind"] not in ("http", "ftp", "folder", "drive"):
                continue
            if options["kind"] == "http" and "ca_bundle" in options:
                options = {**options, "ca_bundle": __file__}  # the README's path exists on the vehicle only
            build = create_target if section_name == "targets" else create_source
            built.add(type(build(name or "alternative", options)).__name__)
    assert built == {"HttpSource", "FtpSource", "FolderSource", "DriveTarget"}, built
