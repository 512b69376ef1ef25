"""The `mavlink` target, the `mavlink` source's removal, and bad input, against a real MAVLink FTP server: MAVSDK 4.1.0
acting as an autopilot (test/support/mavsdk_autopilot.py).

What MAVSDK's server does not do as PX4 does comes from stand-ins in front of it (support.mavsdk_autopilot):
Px4WriteRules (FileProtected outside /fs/microsd/, ENOSPC from a full card, OpenFileWO that keeps the file's bytes)
and ListingRewrite (a vehicle that lists a name with '..'). A reboot is the real autopilot killed and started again.
"""
import io
import os
import threading
import time

import pytest

from filesync.devices import create_source, create_target
from filesync.devices.base import local_digest
from filesync.errors import DeviceUnavailable, FinalNameTaken, PermanentError, StartOver, TransientError, Vanished
from filesync.paths import check_relative, part_name, safe_name
from support.linkemu import LinkEmulator
from support.mavsdk_autopilot import ListingRewrite, MavsdkAutopilot, Px4WriteRules
from support.ulog import write_log

SERIAL_921600 = 92160


@pytest.fixture(scope="module")
def vehicle(tmp_path_factory):
    root = tmp_path_factory.mktemp("vehicle")
    with MavsdkAutopilot(str(root), log_path=str(root.parent / "mavsdk.log")) as autopilot:
        yield autopilot


@pytest.fixture
def area(vehicle, request):
    """A fresh folder on the vehicle for one test: (local path, path on the vehicle)."""
    name = request.node.name.replace("[", "_").replace("]", "").replace("/", "_")
    local = os.path.join(vehicle.root, name)
    os.makedirs(local, exist_ok=True)
    return local, "/" + name


def make_target(url, root, **options):
    return create_target("fc", {"kind": "mavlink", "url": url, "root": root, "heartbeat_timeout": 10.0, **options})


def make_source(url, root, **options):
    return create_source("fc", {"kind": "mavlink", "url": url, "root": root, "settle": False,
                                "heartbeat_timeout": 10.0, **options})


def send(target, path, data, offset=0, stream=None):
    seen = []
    target.write(path, stream or io.BytesIO(data[offset:]), offset, len(data), seen.append)
    return seen


def read(local, path):
    with open(os.path.join(local, path), "rb") as handle:
        return handle.read()


def test_upload_creates_folders_writes_the_part_publishes_and_verifies(vehicle, area, tmp_path):
    local, remote = area
    data = os.urandom(150_000)
    target = make_target(vehicle.url, remote + "/up")
    try:
        assert target.stat("a/b/log.ulg") is None and target.held("a/b/log.ulg") == 0
        seen = send(target, "a/b/log.ulg", data)
        assert seen[-1] == len(data) and seen == sorted(seen)
        assert read(local, "up/a/b/" + part_name("log.ulg")) == data  # under the temporary name first
        assert target.held("a/b/log.ulg") == len(data) and target.stat("a/b/log.ulg") is None
        assert target.publish("a/b/log.ulg", len(data)) == f"vehicle 1:{remote}/up/a/b/log.ulg"
        assert read(local, "up/a/b/log.ulg") == data
        assert not os.path.exists(os.path.join(local, "up/a/b", part_name("log.ulg")))
        (tmp_path / "copy").write_bytes(data)
        assert target.stat("a/b/log.ulg") == len(data)
        assert target.digest("a/b/log.ulg", "mavftp-crc32") == local_digest(str(tmp_path / "copy"), "mavftp-crc32")
        send(target, "empty.ulg", b"")
        target.publish("empty.ulg", 0)
        assert read(local, "up/empty.ulg") == b""
        target.delete("a/b/log.ulg")
        target.delete("a/b/log.ulg")  # already gone: fine
        assert target.stat("a/b/log.ulg") is None
    finally:
        target.close()


def test_publish_never_replaces_another_file_unless_told(vehicle, area):
    local, remote = area
    os.makedirs(os.path.join(local, "t"))
    with open(os.path.join(local, "t", "taken.ulg"), "wb") as handle:
        handle.write(b"theirs")
    target = make_target(vehicle.url, remote + "/t")
    try:
        send(target, "taken.ulg", b"ours!!")
        with pytest.raises(FinalNameTaken):
            target.publish("taken.ulg", 6)
        assert read(local, "t/taken.ulg") == b"theirs" and target.held("taken.ulg") == 6
        target.publish("taken.ulg", 6, replace=True)
        assert read(local, "t/taken.ulg") == b"ours!!"
    finally:
        target.close()


class Broken(Exception):
    pass


class BreakingStream(io.BytesIO):
    """Raises Broken once `limit` bytes have been read (the engine's process dying mid-upload)."""

    def __init__(self, data, limit):
        super().__init__(data)
        self.limit = limit

    def read(self, size=-1):
        if self.tell() >= self.limit:
            raise Broken()
        return super().read(min(size, self.limit - self.tell()))


def count_written(counter):
    """A filter counting the file bytes of WriteFile requests."""
    def count(direction, client, data, reply):
        if direction == "up" and len(data) > 24 and data[0] == 0xFD and data[7:10] == b"\x6e\x00\x00" \
                and data[16] == 7:
            counter[0] += data[17]
        return data
    return count


def test_resume_from_what_the_vehicle_holds(vehicle, area):
    """PX4 keeps a file opened for writing: the upload goes on from held(), sending only the rest."""
    local, remote = area
    data = os.urandom(400_000)
    written = [0]
    with LinkEmulator(("127.0.0.1", vehicle.port), filters=[Px4WriteRules(vehicle.root), count_written(written)]) \
            as link:
        target = make_target(link.url, remote)
        try:
            with pytest.raises(Broken):
                send(target, "r.ulg", data, stream=BreakingStream(data, 3 * 65536))
            held = target.held("r.ulg")
            assert 2 * 65536 < held <= 3 * 65536
            assert read(local, part_name("r.ulg")) == data[:held]
            written[0] = 0
            send(target, "r.ulg", data, offset=held)
            assert written[0] == len(data) - held  # only the rest went over the link
            target.publish("r.ulg", len(data))
        finally:
            target.close()
    assert read(local, "r.ulg") == data


def test_a_server_that_empties_a_file_opened_for_writing_starts_over(vehicle, area):
    """MAVSDK's server truncates on OpenFileWO: resuming would leave zeros, so the target says StartOver."""
    local, remote = area
    data = os.urandom(200_000)
    target = make_target(vehicle.url, remote)
    try:
        with pytest.raises(Broken):
            send(target, "s.ulg", data, stream=BreakingStream(data, 65536))
        held = target.held("s.ulg")
        assert 0 < held <= 65536
        with pytest.raises(StartOver, match="empties a file opened for writing"):
            send(target, "s.ulg", data, offset=held)
        target.discard("s.ulg")
        assert target.held("s.ulg") == 0
        send(target, "s.ulg", data)
        target.publish("s.ulg", len(data))
        assert read(local, "s.ulg") == data
    finally:
        target.close()


def test_file_protected_is_permanent_with_a_clear_line(vehicle, area):
    local, remote = area
    rules = Px4WriteRules(vehicle.root, writable=remote + "/fs/microsd/")
    with LinkEmulator(("127.0.0.1", vehicle.port), filters=[rules]) as link:
        target = make_target(link.url, remote + "/etc")
        try:
            with pytest.raises(PermanentError, match="refuses access.*FileProtected") as caught:
                send(target, "x.ulg", b"data")
            assert "\n" not in str(caught.value)
        finally:
            target.close()
    assert not os.path.exists(os.path.join(local, "etc"))


def test_a_full_sd_card_is_transient_and_the_upload_goes_on_once_there_is_room(vehicle, area):
    local, remote = area
    data = os.urandom(100_000)
    rules = Px4WriteRules(vehicle.root, capacity=30_000)
    with LinkEmulator(("127.0.0.1", vehicle.port), filters=[rules]) as link:
        target = make_target(link.url, remote)
        try:
            with pytest.raises(TransientError, match="SD card is full") as caught:
                send(target, "full.ulg", data)
            assert not isinstance(caught.value, PermanentError) and "\n" not in str(caught.value)
            assert rules.writes_refused >= 1
            held = target.held("full.ulg")
            assert 0 < held <= 30_000 and target.stat("full.ulg") is None  # nothing published
            rules.capacity = None  # space freed
            send(target, "full.ulg", data, offset=held)
            target.publish("full.ulg", len(data))
        finally:
            target.close()
    assert read(local, "full.ulg") == data


def test_a_reboot_mid_write_is_device_unavailable_and_resumes_from_what_it_holds(tmp_path):
    root = tmp_path / "vehicle"
    root.mkdir()
    data = os.urandom(500_000)
    with MavsdkAutopilot(str(root)) as autopilot:
        rules = Px4WriteRules(str(root))
        with LinkEmulator(("127.0.0.1", autopilot.port), bandwidth=SERIAL_921600, filters=[rules]) as link:
            target = make_target(link.url, "/", timeout=0.3, retries=3, heartbeat_timeout=5.0)
            errors = []

            def upload():
                try:
                    send(target, "boot.ulg", data)
                except Exception as error:  # checked below
                    errors.append(error)

            writer = threading.Thread(target=upload)
            writer.start()
            time.sleep(2.0)  # about a third written
            autopilot.restart(down_seconds=2.0)
            writer.join(60)
            try:
                assert len(errors) == 1 and isinstance(errors[0], DeviceUnavailable), errors
                assert "\n" not in str(errors[0])
                target.probe()  # as the engine's worker does until the vehicle answers again
                held = target.held("boot.ulg")
                assert 0 < held < len(data) and target.stat("boot.ulg") is None
                send(target, "boot.ulg", data, offset=held)
                target.publish("boot.ulg", len(data))
            finally:
                target.close()
    assert (root / "boot.ulg").read_bytes() == data


def test_a_name_with_dot_dot_in_a_listing_is_a_problem_and_the_rest_goes_on(vehicle, area):
    local, remote = area
    write_log(os.path.join(local, "evil.ulg"), 100)
    write_log(os.path.join(local, "good.ulg"), 200)
    os.makedirs(os.path.join(local, "sub"))
    write_log(os.path.join(local, "sub", "x.ulg"), 300)
    with LinkEmulator(("127.0.0.1", vehicle.port),
                      filters=[ListingRewrite("evil.ulg", "../evil.ulg"), ListingRewrite("sub", "s/../..")]) as link:
        source = make_source(link.url, remote)
        try:
            listing = {entry.path: entry for entry in source.list()}
        finally:
            source.close()
    assert listing["good.ulg"].problem == "" and listing["good.ulg"].size == 200
    bad = [entry for entry in listing.values() if entry.problem]
    assert len(bad) == 2 and all("'..'" in entry.problem and "\n" not in entry.problem for entry in bad)
    for entry in bad:
        check_relative(safe_name(entry.path))  # recorded as a failed file under a harmless name
    assert not any(path.startswith("..") or "/" in path for path in listing)  # nothing outside root was listed


def test_delete_removes_a_log_but_never_while_armed_nor_while_it_grows(vehicle, area):
    local, remote = area
    for name in ("a.ulg", "b.ulg", "c.ulg"):
        write_log(os.path.join(local, name), 5000)
    source = make_source(vehicle.url, remote, growth_check=1.0)
    try:
        assert source.can_delete and type(source).deletes({})
        source.delete("a.ulg")
        assert not os.path.exists(os.path.join(local, "a.ulg"))
        source.delete("a.ulg")  # already gone: counts as removed
        with pytest.raises(Vanished):
            source.stat("a.ulg")
        vehicle.set_armed(True)
        deadline = time.monotonic() + 15
        while not source.link.heartbeat() and time.monotonic() < deadline:
            time.sleep(0.2)
        with pytest.raises(TransientError, match="armed"):
            source.delete("b.ulg")
        assert os.path.exists(os.path.join(local, "b.ulg"))
        vehicle.set_armed(False)
        while source.link.heartbeat() and time.monotonic() < deadline + 15:
            time.sleep(0.2)

        def grow():
            with open(os.path.join(local, "c.ulg"), "ab") as handle:
                for _ in range(8):
                    handle.write(b"x" * 100)
                    handle.flush()
                    time.sleep(0.25)

        grower = threading.Thread(target=grow)
        grower.start()
        try:
            with pytest.raises(TransientError, match="still being written"):
                source.delete("c.ulg")
        finally:
            grower.join()
        assert os.path.getsize(os.path.join(local, "c.ulg")) == 5800
        source.delete("b.ulg")
        assert not os.path.exists(os.path.join(local, "b.ulg"))
    finally:
        vehicle.set_armed(False)
        source.close()


def test_a_path_too_long_for_mavlink_ftp_is_refused_with_a_clear_line(vehicle, area):
    local, remote = area
    target = make_target(vehicle.url, remote)
    try:
        with pytest.raises(PermanentError, match="at most 238 bytes"):
            send(target, "n" * 240 + ".ulg", b"x")
    finally:
        target.close()
