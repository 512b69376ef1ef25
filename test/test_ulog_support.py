"""The test logs are ULog files pyulog reads, and the Flight Review stand-in judges them as the real server does.

support.ulog writes valid ULog files of an exact size, truncated and garbled ones that pyulog still reads, and the
ULog magic followed by random bytes (what the tests used to upload), which the real server refuses (FACTS.md).
"""
import contextlib
import hashlib
import io
import json
import os
import struct
import subprocess
import sys

import pytest
import requests
from pyulog import ULog

from support import ulog as logs
from support.flight_review_server import PARSE_FILTER, FlightReviewServer

HERE = os.path.dirname(os.path.abspath(__file__))
PARSE_FAILED = "HTTP Error 400: Failed to parse the file. It is most likely corrupt."


def parse(path, topics=None):
    """pyulog's reading of `path` (its warnings silenced)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return ULog(path, topics, disable_str_exceptions=True)


def message_ends(path):
    """The offsets where the file's messages end, walking their 3-byte headers from the end of the file header."""
    data = open(path, "rb").read()
    ends, offset = [], 16
    while offset + 3 <= len(data):
        size, = struct.unpack_from("<H", data, offset)
        offset += 3 + size
        ends.append(offset)
    return ends


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# --- support.ulog ---------------------------------------------------------------------------------------------------

SIZES = [logs.MIN_ULOG_SIZE, logs.MIN_ULOG_SIZE + 1, 478, 1000, 4096, 35_000, 35_001, 100_003, 1_000_000, 3_000_017]


@pytest.mark.parametrize("size", SIZES)
def test_write_log_makes_a_clean_ulog_of_exactly_the_size(tmp_path, size):
    path = str(tmp_path / "a.ulg")
    digest = logs.write_log(path, size, seed=4)
    assert os.path.getsize(path) == size and digest == sha256(path)
    log = parse(path)
    assert not log.file_corruption
    assert log.msg_info_dict["sys_name"] == "PX4" and log.msg_info_dict["ver_hw"] == "SITL"
    assert log.initial_parameters == {"MAV_TYPE": 2}
    [data] = log.data_list
    assert data.name == logs.TOPIC and len(data.data["timestamp"]) >= 1
    assert list(data.data["timestamp"]) == sorted(data.data["timestamp"])
    assert message_ends(path)[-1] == size  # the last message ends at the end of the file
    [filler] = log.logged_messages  # the final logged string, which sets the size
    assert ("filesync test log " * 4000).startswith(filler.message)


def test_every_size_near_the_smallest_and_across_a_data_message_is_exact_and_readable(tmp_path):
    path = str(tmp_path / "a.ulg")
    sizes = list(range(logs.MIN_ULOG_SIZE, logs.MIN_ULOG_SIZE + 120)) + list(range(200_000, 204_200, 61))
    for size in sizes:
        logs.write_log(path, size, seed=size % 5)
        assert os.path.getsize(path) == size
        log = parse(path)
        assert not log.file_corruption and log.data_list and log.logged_messages, size


def test_write_log_is_deterministic_and_seeded(tmp_path):
    first, again, other = (str(tmp_path / name) for name in ("1.ulg", "2.ulg", "3.ulg"))
    assert logs.write_log(first, 300_000, seed=1) == logs.write_log(again, 300_000, seed=1)
    assert open(first, "rb").read() == open(again, "rb").read()
    assert logs.write_log(other, 300_000, seed=2) != sha256(first)


@pytest.mark.parametrize("size", [0, 1, 10, 239, 240, logs.MIN_ULOG_SIZE - 1])
def test_sizes_too_small_for_a_ulog_get_plain_bytes(tmp_path, size):
    path = str(tmp_path / "edge.ulg")
    digest = logs.write_log(path, size, seed=3)
    data = open(path, "rb").read()
    assert len(data) == size and digest == hashlib.sha256(data).hexdigest()
    assert not data.startswith(logs.ULOG_MAGIC[:1]) and logs.write_bytes(str(tmp_path / "b"), size, seed=3) == digest


LARGE_LOG_CHILD = r"""
import contextlib, io, json, sys
sys.path.insert(0, sys.argv[1])
from pyulog import ULog
from support import ulog
from support.flight_review_server import PARSE_FILTER
size = int(sys.argv[3])
ulog.write_log(sys.argv[2], size, seed=8)
with contextlib.redirect_stdout(io.StringIO()):
    log = ULog(sys.argv[2], PARSE_FILTER, disable_str_exceptions=True)
with open("/proc/self/status") as status:
    peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"peak_kib": peak_kib, "corrupt": log.file_corruption, "strings": len(log.logged_messages),
                  "sys_name": log.msg_info_dict.get("sys_name")}))
"""


def test_a_50_mb_log_is_written_and_read_in_flat_memory(tmp_path):
    path, size = str(tmp_path / "big.ulg"), 50 * 1000 * 1000
    child = subprocess.run([sys.executable, "-c", LARGE_LOG_CHILD, HERE, path, str(size)], capture_output=True,
                           text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    assert os.path.getsize(path) == size
    # read to the end (the final logged string), skipping the data as Flight Review's filter does
    assert (result["corrupt"], result["strings"], result["sys_name"]) == (False, 1, "PX4")
    assert result["peak_kib"] < 80 * 1024, result  # 37 MiB here, as for 400 MB: pyulog and numpy; the file is 50 MB


@pytest.mark.parametrize("size", [logs.MIN_ULOG_SIZE + 2100, 35_001, 1_000_000])
def test_a_truncated_log_ends_inside_a_message_and_pyulog_reads_the_rest(tmp_path, size):
    path = str(tmp_path / "cut.ulg")
    digest = logs.write_truncated_log(path, size, seed=2)
    assert os.path.getsize(path) == size and digest == sha256(path)
    assert message_ends(path)[-1] > size  # the last message runs past the end of the file
    log = parse(path)
    assert log.data_list and log.logged_messages and log.msg_info_dict["ver_hw"] == "SITL"


@pytest.mark.parametrize("seed", range(4))
def test_a_garbled_log_is_read_on_after_the_garbage(tmp_path, seed):
    path, size = str(tmp_path / "garbled.ulg"), 600_000 + seed * 7919
    clean = str(tmp_path / "clean.ulg")
    digest = logs.write_garbled_log(path, size, seed=seed)
    logs.write_log(clean, size, seed=seed)
    assert os.path.getsize(path) == size and digest == sha256(path) != sha256(clean)
    garbled, whole = parse(path), parse(clean)
    assert garbled.file_corruption
    kept, written = len(garbled.data_list[0].data["timestamp"]), len(whole.data_list[0].data["timestamp"])
    assert written - logs.SYNC_EVERY <= kept < written  # one run between two sync messages is lost, no more
    assert len(garbled.logged_messages) == 1  # read on to the end


@pytest.mark.parametrize("size", [1000, 10_000, 35_000])
def test_pyulog_cannot_parse_the_magic_followed_by_random_bytes(tmp_path, size):
    path = str(tmp_path / "random.ulg")
    logs.write_magic_and_random(path, size, seed=0)
    assert os.path.getsize(path) == size and open(path, "rb").read(7) == logs.ULOG_MAGIC
    with pytest.raises(OSError):  # it seeks back before the start of the file
        parse(path, PARSE_FILTER)


# --- the Flight Review stand-in -------------------------------------------------------------------------------------

@pytest.fixture
def review_server(tmp_path):
    server = FlightReviewServer(tmp_path / "review").start()
    try:
        yield server
    finally:
        server.stop()


def post(server, path, **fields):
    with open(path, "rb") as handle:
        return requests.post(f"{server.url}/upload", data={"description": "", "email": "", **fields},
                             files={"filearg": (os.path.basename(path), handle)}, allow_redirects=False, timeout=60)


def download(server, answer):
    log_id = answer.headers["Location"].split("log=")[1]
    got = requests.get(f"{server.url}/download", params={"log": log_id}, timeout=60)
    assert got.status_code == 200
    return got.content


def test_the_stand_in_refuses_the_magic_and_random_bytes_and_keeps_the_file(tmp_path, review_server):
    path = str(tmp_path / "random.ulg")
    logs.write_magic_and_random(path, 10_000, seed=0)
    answer = post(review_server, path)
    assert answer.status_code == 400 and PARSE_FAILED in answer.text
    assert review_server.uploads == []
    [orphan] = review_server.orphans  # moved into storage before parsing, never removed: as the real server does
    assert sha256(orphan) == sha256(path)
    assert post(review_server, path, source="CI").status_code == 302  # CI uploads are not parsed


def test_the_stand_in_accepts_valid_truncated_and_garbled_logs_byte_identical(tmp_path, review_server):
    made = []
    for size in (logs.MIN_ULOG_SIZE, 478, 35_001, 1_000_000):
        made.append(str(tmp_path / f"valid-{size}.ulg"))
        logs.write_log(made[-1], size, seed=size)
    made.append(str(tmp_path / "cut.ulg"))
    logs.write_truncated_log(made[-1], 300_000, seed=3)
    made.append(str(tmp_path / "garbled.ulg"))
    logs.write_garbled_log(made[-1], 700_000, seed=3)
    for path in made:
        answer = post(review_server, path)
        assert answer.status_code == 302, (path, answer.text)
        assert download(review_server, answer) == open(path, "rb").read(), path
    assert review_server.orphans == [] and len(review_server.uploads) == len(made)


def custom_log(path, *messages):
    """A ULog of header and flag bits and `messages` (support.ulog builders), nothing else: pyulog reads it."""
    with open(path, "wb") as handle:
        handle.write(logs.file_header() + logs.flag_bits() + b"".join(messages))
    assert not parse(path).file_corruption
    return path


def test_the_stand_in_answers_500_where_the_real_handler_fails_reading_the_parsed_log(tmp_path, review_server):
    # before the database commit (update_vehicle_db_entry): nothing stored, the file stays
    numeric_uuid = custom_log(str(tmp_path / "uuid.ulg"), logs.info_message("sys_uuid", 7, "int32_t"))
    float_flight_time = custom_log(str(tmp_path / "time.ulg"), logs.info_message("sys_uuid", "abc"),
                                   logs.parameter_message("LND_FLIGHT_T_HI", 0.0),
                                   logs.parameter_message("LND_FLIGHT_T_LO", 1.5))
    for path in (numeric_uuid, float_flight_time):
        assert post(review_server, path).status_code == 500, path
    assert review_server.uploads == [] and len(review_server.orphans) == 2
    # after the commit (the e-mail's info): stored, yet answered 500
    numeric_hardware = custom_log(str(tmp_path / "hw.ulg"), logs.info_message("ver_hw", 5, "int32_t"))
    assert post(review_server, numeric_hardware).status_code == 500
    assert [upload.sha256 for upload in review_server.uploads] == [sha256(numeric_hardware)]
    # integer flight time parameters, string info values: accepted
    fine = custom_log(str(tmp_path / "fine.ulg"), logs.info_message("sys_uuid", "abc"),
                      logs.parameter_message("LND_FLIGHT_T_HI", 0), logs.parameter_message("LND_FLIGHT_T_LO", -5))
    assert post(review_server, fine).status_code == 302


def test_only_a_public_flight_report_reads_the_software_version(tmp_path, review_server):
    text_release = custom_log(str(tmp_path / "release.ulg"), logs.info_message("ver_sw_release", "v1.14.0"))
    assert post(review_server, text_release).status_code == 302
    assert post(review_server, text_release, type="flightreport", public="false").status_code == 302
    assert post(review_server, text_release, type="flightreport", public="true").status_code == 500
    assert len(review_server.uploads) == 3  # the last one too: its failure comes after the commit
