"""Several transfers per device at once (issue 18 item 1), against a real pyftpdlib server: as many uploads at once as
`transfers` says, each on its own connection; a vehicle refuses more than one; the status shows them all; kill -9
in the middle of several loses nothing and publishes nothing twice."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import write_file
from filesync.config import load_config
from filesync.engine.runner import LocalRunner
from filesync.errors import ConfigError
from filesync.status import StatusBuilder, format_status, worker_report
from support.ftp_server import FtpServerProcess
from test_pipeline import assert_arrived, make_config

HERE = os.path.dirname(os.path.abspath(__file__))
KiB, MiB = 1 << 10, 1 << 20


def throttled_server(tmp_path):
    """A server that takes 64 KiB/s per upload (pyftpdlib pauses a data connection at the second 64 KiB it gets), so
    an upload of 200 KiB stays open about two seconds and uploads overlap."""
    return FtpServerProcess(str(tmp_path / "ftp_root"), str(tmp_path / "ftp.log"), bandwidth=64 * KiB).start()


def with_transfers(config, transfers):
    config["sources"]["inbox"]["transfers"] = transfers
    config["targets"]["ftp"]["transfers"] = transfers
    return config


@pytest.mark.parametrize("transfers", [4, 1])
def test_the_target_receives_as_many_uploads_at_once_as_transfers_says(tmp_path, transfers):
    server = throttled_server(tmp_path)
    paths = [f"d{i % 2}/f{i}.bin" for i in range(6)]
    for path in paths:
        write_file(str(tmp_path / "inbox" / path), 200 * KiB)
    runner = None
    try:
        runner = LocalRunner(with_transfers(make_config(tmp_path, server), transfers))
        runner.run_until_settled(timeout=120)
        assert {r.state for r in runner.ledger.files()} == {"uploaded"}
    finally:
        if runner is not None:
            runner.close()
        server.stop()
    assert_arrived(tmp_path, server, paths)  # each identical, published once, no .part left
    assert server.most_stores_at_once() == transfers  # counted on the server: opened and not yet ended


def test_the_default_is_four_transfers_and_one_for_a_vehicle(tmp_path, ftp_server):
    from filesync.devices.vehicle.mavlink import MavlinkSource, MavlinkTarget
    from filesync.devices.vehicle.mavros import MavrosSource, MavrosTarget
    from filesync.devices.drive import DriveTarget
    assert [cls.transfers_option().default for cls in (MavlinkSource, MavlinkTarget, MavrosSource, MavrosTarget,
                                                       DriveTarget)] == [1] * 5
    runner = LocalRunner(make_config(tmp_path, ftp_server))
    try:
        uploaders = [loop for loop in runner.loops if getattr(loop, "kind", "") == "upload"]
        downloaders = [loop for loop in runner.loops if getattr(loop, "kind", "") == "download"]
        assert len(uploaders) == len(downloaders) == 4
        # the ledger's lease owner is unique per worker; each uploader has its own target (its own connection)
        assert len({w.worker for w in uploaders + downloaders}) == 8
        assert len({id(w.device) for w in uploaders}) == 4
        assert len({id(w.share) for w in uploaders}) == 1  # one link state, one prober for the target
    finally:
        runner.close()


@pytest.mark.parametrize("section, kind", [("sources", "mavlink"), ("targets", "mavlink"), ("sources", "mavros"),
                                           ("targets", "mavros"), ("targets", "drive")])
def test_a_vehicle_or_a_drive_target_refuses_two_transfers_when_the_config_is_loaded(tmp_path, section, kind):
    vehicle = {"kind": kind, "transfers": 2}
    config = {"sources": {"inbox": {"kind": "folder", "path": str(tmp_path)}},
              "targets": {"out": {"kind": "folder", "path": str(tmp_path / "out")}},
              "pipelines": [{"source": "inbox", "targets": ["out"]}]}
    config[section]["px4"] = vehicle
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    message = str(raised.value)
    assert message.startswith(f"{section}.px4.transfers: ") and "got 2" in message and "\n" not in message


@pytest.mark.parametrize("value, expected", [(0, "must be 1 or more, got 0"), ("4", "expected an integer")])
def test_a_bad_transfers_value_is_one_line_naming_the_key(tmp_path, value, expected):
    config = {"sources": {"inbox": {"kind": "folder", "path": str(tmp_path), "transfers": value}},
              "targets": {"out": {"kind": "folder", "path": str(tmp_path / "out")}},
              "pipelines": [{"source": "inbox", "targets": ["out"]}]}
    with pytest.raises(ConfigError, match=f"^sources.inbox.transfers: {expected}"):
        load_config(config)


def test_the_status_shows_every_upload_of_one_target(tmp_path):
    server = throttled_server(tmp_path)
    for i in range(6):
        write_file(str(tmp_path / "inbox" / f"f{i}.bin"), 200 * KiB)
    runner, seen = None, []
    try:
        runner = LocalRunner(with_transfers(make_config(tmp_path, server), 3))
        runner.start()
        deadline = time.monotonic() + 60
        while len(seen) < 3 and time.monotonic() < deadline:
            report = worker_report("local", runner.loops)
            seen = [t for t in report.transfers if t.kind == "upload" and t.device == "ftp"]
            time.sleep(0.05)
        status = StatusBuilder(runner.config).build({}, [report], 0)
        text = format_status(status)
    finally:
        if runner is not None:
            runner.close()
        server.stop()
    assert len(seen) == 3 and len({t.file_id for t in seen}) == 3 and len({t.worker for t in seen}) == 3
    assert len([t for t in status.transfers if t.device == "ftp"]) == 3
    assert sum(line.split()[:2] == ["upload", "ftp:"] for line in text.splitlines()) == 3, text  # `filesync status`


def test_kill_9_in_the_middle_of_several_transfers_loses_nothing_and_publishes_once(tmp_path):
    server = FtpServerProcess(str(tmp_path / "ftp_root"), str(tmp_path / "ftp.log")).start()
    rng = random.Random(int(os.environ.get("FILESYNC_TEST_SEED", "18")))
    sizes = [rng.randrange(0, 3 * MiB) for _ in range(24)] + [0, 1, 8 * MiB]
    paths = [f"d{i % 3}/f{i}.bin" for i in range(len(sizes))]
    for path, size in zip(paths, sizes):
        write_file(str(tmp_path / "inbox" / path), size)
    config = with_transfers(make_config(tmp_path, server, lease_seconds=5.0, bwlimit=1 * MiB), 4)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    command = [sys.executable, os.path.join(HERE, "support", "run_local.py"), str(config_path)]
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(HERE, "..", "src"), HERE]))
    kills = 0
    try:
        for _ in range(8):
            process = subprocess.Popen(command, env=environment)
            time.sleep(rng.uniform(0.5, 1.5))
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
        most = server.most_stores_at_once()
        subprocess.run(command + ["--until-settled"], env=environment, check=True, timeout=300)
    finally:
        server.stop()
    assert most > 1  # killed while several uploads were under way
    assert_arrived(tmp_path, server, paths)  # every file identical on the server, each published once
    resent = sum(e["received"] for e in server.events("STOR")) - sum(sizes)
    # uploads go on from what the server holds: at most a checkpoint per transfer in progress at each kill
    assert 0 <= resent <= kills * 4 * config["checkpoint_bytes"], (resent, kills)


def write_whole(path, data):
    """Write `path` as a scan may see it: a hidden name first, then renamed into place."""
    hidden = os.path.join(os.path.dirname(path), "." + os.path.basename(path))
    with open(hidden, "wb") as handle:
        handle.write(data)
    os.replace(hidden, path)


def wait_for(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_two_versions_of_a_name_are_never_sent_at_once_and_neither_is_overwritten(tmp_path):
    server = throttled_server(tmp_path)
    server.stop()  # away until both versions are staged; it comes back on the same port
    os.makedirs(tmp_path / "inbox")
    first, second = os.urandom(200 * KiB), os.urandom(300 * KiB)
    write_whole(str(tmp_path / "inbox" / "f.bin"), first)
    runner = None
    try:
        runner = LocalRunner(with_transfers(make_config(tmp_path, server), 4))
        runner.start()
        wait_for(lambda: [r.task("download").state for r in runner.ledger.files()] == ["done"])
        write_whole(str(tmp_path / "inbox" / "f.bin"), second)
        wait_for(lambda: [r.task("download").state for r in runner.ledger.files()] == ["done", "done"])
        server.start()
        runner.run_until_settled(timeout=120)
        assert {r.state for r in runner.ledger.files()} == {"uploaded"}
    finally:
        if runner is not None:
            runner.close()
        server.stop()
    assert server.most_stores_at_once() == 1  # the two uploads of f.bin took turns
    stored = {name: open(os.path.join(server.root, "incoming", name), "rb").read()
              for name in os.listdir(os.path.join(server.root, "incoming"))}
    assert sorted(stored.values()) == sorted([first, second]) and "f.bin" in stored, list(stored)  # none overwritten


def test_the_workers_of_a_device_that_is_down_probe_it_one_at_a_time(tmp_path):
    server = FtpServerProcess(str(tmp_path / "ftp_root"), str(tmp_path / "ftp.log")).start()
    server.stop()
    for i in range(8):
        write_file(str(tmp_path / "inbox" / f"f{i}.bin"), 10 * KiB)
    runner = LocalRunner(with_transfers(make_config(tmp_path, server), 4))
    uploaders = [loop for loop in runner.loops if getattr(loop, "kind", "") == "upload"]
    probing, probes, most = [0], [0], [0]

    def counted(probe):
        def wrapper():
            probing[0] += 1
            probes[0] += 1
            most[0] = max(most[0], probing[0])
            try:
                time.sleep(0.05)  # long enough for siblings to overlap, were they allowed to
                return probe()
            finally:
                probing[0] -= 1
        return wrapper

    for worker in uploaders:  # the real FTP target's probe, counted
        worker.device.probe = counted(worker.device.probe)
    try:
        runner.start()
        wait_for(lambda: probes[0] > 0)
        time.sleep(4)  # poll_interval 1 s: one worker probes about once a second; four on their own would be 4 times
        seen = probes[0]
        server.start()
        runner.run_until_settled(timeout=60)
    finally:
        runner.close()
        server.stop()
    assert most[0] == 1 and seen <= 7, (most[0], seen)
    assert_arrived(tmp_path, server, [f"f{i}.bin" for i in range(8)])
