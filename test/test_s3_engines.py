"""The s3 target on three S3 engines: SeaweedFS, which checks the x-amz-checksum-sha256 it is sent, and moto's server
and `rclone serve s3`, which do not (FACTS.md). Between filesync and the store, a proxy flips one byte of every
request body (support/damaging_proxy.py): a damaged copy must never be recorded as uploaded, a copy that fails its
check is deleted and sent again under the same name (no conflict copies), and a parked or forgotten file leaves no
multipart upload open. Each engine is started once for the module; every test writes under a vehicle of its own.
"""
import hashlib
import os
import sqlite3
import time
from contextlib import closing

import boto3
import botocore.client
import botocore.exceptions
import pytest

from conftest import write_file
from filesync.devices import create_target
from filesync.devices.s3.multipart import MIB
from filesync.devices.s3.store import ETAG_MD5, STORE_CHECKSUM, forget_stores
from filesync.engine.runner import LocalRunner
from filesync.errors import FileError, StartOver
from filesync.status import StatusBuilder, diagnose, worker_report
from support.damaging_proxy import DamagingProxy
from support.moto_s3 import MotoS3
from support.rclone_s3 import RcloneS3
from support.s3_server import BUCKET
from support.seaweedfs import SeaweedS3
from test_cli import ENVIRONMENT, Ros

ENGINES = {"seaweedfs": SeaweedS3, "moto": MotoS3, "rclone": RcloneS3}
VERIFIED_BY = {"seaweedfs": STORE_CHECKSUM, "moto": ETAG_MD5, "rclone": ETAG_MD5}
PART = 5 * MIB
FILES = {"small.bin": 100_000, "big.bin": PART + 1000}  # one PutObject, one multipart upload of two parts


@pytest.fixture(scope="module", params=sorted(ENGINES))
def engine(request, tmp_path_factory):
    """One running engine (each of the three in turn), for the whole module."""
    server = ENGINES[request.param](str(tmp_path_factory.mktemp(request.param)))
    server.name = request.param
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def proxy(engine):
    """A damaging proxy in front of the engine, passing bytes unchanged until told to damage them."""
    proxy = DamagingProxy(engine.s3_port, damaging=False)
    try:
        yield proxy
    finally:
        proxy.stop()


def count_sends(target):
    """A list that gets the operation name of every request the target's client sends."""
    sent = []
    events = target._client().meta.events
    events.register("before-parameter-build.s3", lambda model, context, **_: context.update(operation=model.name))
    events.register("before-send.s3", lambda request, **_: sent.append(request.context.get("operation")))
    return sent


def keys_and_uploads(engine, prefix):
    """The object keys and the keys of open multipart uploads under `prefix`."""
    client = engine.client()
    keys = [entry["Key"] for entry in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
    try:
        uploads = [upload["Key"] for upload in client.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix)
                   .get("Uploads", [])]
    except client.exceptions.NoSuchUpload:  # rclone serve s3's answer when none is open
        uploads = []
    return sorted(keys), sorted(uploads)


def runner_config(tmp_path, target):
    inbox = tmp_path / "inbox"
    for name, size in FILES.items():
        write_file(str(inbox / name), size)
    return {"staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
            "max_attempts": 2, "retry_base": 0.1, "retry_cap": 0.2, "poll_interval": 0.2, "scan_interval": 0.5,
            "sources": {"inbox": {"kind": "folder", "path": str(inbox), "min_age": 0.0}},
            "targets": {"store": target}, "pipelines": [{"source": "inbox", "targets": ["store"]}]}


def test_each_store_is_verified_by_what_it_computes_found_once_per_endpoint(engine, tmp_path):
    options = engine.target_options(vehicle=tmp_path.name)
    first, second = create_target("store", options), create_target("again", options)
    sent = count_sends(first)
    assert first.verification() == VERIFIED_BY[engine.name] == first.verified_by
    # a wrong checksum (SeaweedFS refuses it: sent again right), then If-None-Match onto it, then the DELETE
    assert sent == ["PutObject"] * (3 if engine.name == "seaweedfs" else 2) + ["DeleteObject"]
    assert first.store().if_none_match == (engine.name != "rclone")  # rclone serve s3 ignores it
    assert keys_and_uploads(engine, tmp_path.name) == ([], [])  # the probe leaves nothing behind
    sent = count_sends(second)
    assert second.verification() == VERIFIED_BY[engine.name] and sent == []  # once per endpoint and process


def test_damaged_copies_are_never_recorded_uploaded_nor_kept(engine, proxy, tmp_path):
    vehicle = tmp_path.name
    target = engine.target_options(endpoint_url=proxy.endpoint, vehicle=vehicle, part_size=PART,
                                   multipart_threshold=PART, max_attempts=1)
    assert create_target("probe", target).verification() == VERIFIED_BY[engine.name]  # before the damage starts
    proxy.damaging = True
    runner = LocalRunner(runner_config(tmp_path, target))
    try:
        runner.run_until_settled(timeout=60)
        records = runner.ledger.files()
        assert sorted((r.path, r.state) for r in records) == [("big.bin", "failed"), ("small.bin", "failed")]
        assert proxy.damaged > 0
        # nothing damaged stays under the final name, no conflict copy, no multipart upload open (billed)
        assert keys_and_uploads(engine, vehicle) == ([], [])
        proxy.damaging = False
        for record in records:
            runner.ledger.retry(record.id)
        for loop in runner.loops:
            loop.wake.set()
        runner.run_until_settled(timeout=60)
        assert {r.state for r in runner.ledger.files()} == {"uploaded"}
    finally:
        runner.close()
    expected = {f"{vehicle}/inbox/{name}": (tmp_path / "inbox" / name).read_bytes() for name in FILES}
    assert keys_and_uploads(engine, vehicle) == (sorted(expected), [])  # each once, under its own name
    for key, data in expected.items():
        assert engine.client().get_object(Bucket=BUCKET, Key=key)["Body"].read() == data


def test_a_file_is_shown_parked_only_once_its_multipart_upload_is_aborted(engine, proxy, tmp_path, monkeypatch):
    """The abort comes before the ledger records the park: a slow abort (a far store) must not leave a window in which
    the file is shown failed while its upload is still open (CI saw that window on SeaweedFS)."""
    if engine.name != "seaweedfs":
        pytest.skip("the store that refuses damaged parts: the upload stays open until the park aborts it")
    target_class = type(create_target("probe", engine.target_options()))
    discard = target_class.discard

    def slow_discard(self, path):
        time.sleep(1.0)
        discard(self, path)
    monkeypatch.setattr(target_class, "discard", slow_discard)
    vehicle = tmp_path.name
    target = engine.target_options(endpoint_url=proxy.endpoint, vehicle=vehicle, part_size=PART,
                                   multipart_threshold=PART, max_attempts=1)
    config = runner_config(tmp_path, target)
    config["max_attempts"] = 1
    proxy.damaging = True
    runner = LocalRunner(config)
    try:
        runner.start()
        deadline = time.monotonic() + 60
        while getattr(runner.ledger.find("inbox", "big.bin"), "state", None) != "failed":
            assert time.monotonic() < deadline, "the big file was never parked"
            time.sleep(0.02)
        assert keys_and_uploads(engine, vehicle)[1] == []
    finally:
        runner.close()


def test_a_copy_that_fails_its_check_is_deleted_and_sent_again(engine, proxy, tmp_path):
    """One damaged attempt, then clean ones: the file ends uploaded once, under its own name."""
    if VERIFIED_BY[engine.name] == STORE_CHECKSUM:
        pytest.skip("SeaweedFS refuses the damaged bytes itself: nothing damaged is ever published")
    vehicle = tmp_path.name
    target = engine.target_options(endpoint_url=proxy.endpoint, vehicle=vehicle, part_size=PART,
                                   multipart_threshold=PART, max_attempts=1)
    config = runner_config(tmp_path, target)
    config["max_attempts"] = 5
    create_target("probe", target).verification()
    proxy.damaging = True
    runner = LocalRunner(config)
    try:
        runner.start()
        deadline = time.monotonic() + 30
        while not any(r.error for r in runner.ledger.files() if r.path == "small.bin"):
            assert time.monotonic() < deadline, "the damaged copy was never found"
            time.sleep(0.05)
        proxy.damaging = False
        runner.run_until_settled(timeout=60)
        assert {r.state for r in runner.ledger.files()} == {"uploaded"}
    finally:
        runner.close()
    expected = sorted(f"{vehicle}/inbox/{name}" for name in FILES)
    assert keys_and_uploads(engine, vehicle) == (expected, [])
    small = engine.client().get_object(Bucket=BUCKET, Key=f"{vehicle}/inbox/small.bin")["Body"].read()
    assert small == (tmp_path / "inbox" / "small.bin").read_bytes()


def test_forget_aborts_the_open_multipart_upload(engine, proxy, tmp_path):
    if VERIFIED_BY[engine.name] != STORE_CHECKSUM:
        pytest.skip("this store keeps damaged parts: the upload completes and is deleted instead of staying open")
    vehicle = tmp_path.name
    target = engine.target_options(endpoint_url=proxy.endpoint, vehicle=vehicle, part_size=PART,
                                   multipart_threshold=PART, max_attempts=1)
    config = runner_config(tmp_path, target)
    config.update(retry_base=600.0, retry_cap=600.0)  # the refused upload waits, open, for its next attempt
    proxy.damaging = True
    runner = LocalRunner(config)
    try:
        runner.start()
        deadline = time.monotonic() + 30
        while True:
            big = runner.ledger.find("inbox", "big.bin")
            if big is not None and big.error and keys_and_uploads(engine, vehicle)[1]:
                break
            assert time.monotonic() < deadline, "the big file's upload never failed with its upload open"
            time.sleep(0.05)
        (tmp_path / "inbox" / "big.bin").unlink()  # not found again: no new upload opens after the forget
        assert runner.forget(big.id)
        deadline = time.monotonic() + 10
        while keys_and_uploads(engine, vehicle)[1]:
            assert time.monotonic() < deadline, "the forgotten file's multipart upload is still open"
            time.sleep(0.05)
    finally:
        runner.close()


def test_the_status_and_diagnostics_say_how_the_store_is_verified(engine, tmp_path):
    target = engine.target_options(vehicle=tmp_path.name)
    runner = LocalRunner(runner_config(tmp_path, target))
    try:
        runner.run_until_settled(timeout=60)
        status = StatusBuilder(runner.config).build(runner.ledger.counts(), [worker_report("local", runner.loops)], 0)
    finally:
        runner.close()
    link = next(link for link in status.links if link.name == "store")
    assert link.verified_by == VERIFIED_BY[engine.name]
    diagnosis = next(d for d in diagnose(status, {}, warn_after=30.0) if d.name == "target store")
    assert diagnosis.values["verified by"] == VERIFIED_BY[engine.name]
    assert "verified by" not in next(d for d in diagnose(status, {}, 30.0) if d.name == "source inbox").values


def test_a_bucket_policy_without_delete_does_not_stop_uploads(tmp_path, caplog):
    """Vehicles often get credentials that may write and read but not delete: the store probe's object then stays
    (said in a warning), and files still go."""
    server = MotoS3(str(tmp_path / "moto"), free_actions=6)  # start()'s 3 requests, then iam_user()'s 3
    server.start()
    try:
        key_id, secret = server.iam_user("vehicle", ["s3:PutObject", "s3:GetObject", "s3:HeadObject",
                                                     "s3:ListBucket", "s3:ListBucketMultipartUploads",
                                                     "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"])
        target = server.target_options(vehicle="rover7", access_key_id=key_id, secret_access_key=secret)
        vehicle = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=key_id,
                               aws_secret_access_key=secret, region_name="us-east-1")
        with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):  # the policy does bite
            vehicle.delete_object(Bucket=BUCKET, Key="anything")
        runner = LocalRunner(runner_config(tmp_path, target))
        try:
            runner.run_until_settled(timeout=60)
            assert {r.state for r in runner.ledger.files()} == {"uploaded"}
        finally:
            runner.close()
        assert "the probe object rover7/inbox/.filesync-store-probe-" in caplog.text
    finally:
        server.remove()


@pytest.mark.skipif(ENVIRONMENT is None, reason="the catkin workspace is not built: run `make setup`")
def test_forget_over_ros_aborts_the_uploader_nodes_open_upload(tmp_path):
    """As in use: finder, downloader and uploader nodes, `filesync forget ID` through the ledger node; the uploader
    node drops the forgotten version's multipart upload when the ledger announces it."""
    server = SeaweedS3(str(tmp_path / "seaweed"))
    server.start()
    proxy = DamagingProxy(server.s3_port)  # SeaweedFS refuses every part: the upload stays open, waiting to retry
    ros = Ros(str(tmp_path / "ros"))
    os.makedirs(ros.workdir)
    try:
        target = server.target_options(endpoint_url=proxy.endpoint, vehicle="rover7", part_size=PART,
                                       multipart_threshold=PART, max_attempts=1)
        config = runner_config(tmp_path, target)
        config.update(retry_base=600.0, retry_cap=600.0)
        ros.start_master()
        ros.set_config(config)
        for node in ("ledger", "finder", "downloader", "uploader"):
            ros.start_node(node)
        deadline = time.monotonic() + 60
        while not keys_and_uploads(server, "rover7/")[1]:
            assert time.monotonic() < deadline, "the upload never opened"
            time.sleep(0.2)
        with closing(sqlite3.connect(f"file:{config['database']}?mode=ro", uri=True)) as db:
            file_id = db.execute("SELECT id FROM files WHERE path = 'big.bin'").fetchone()[0]
        (tmp_path / "inbox" / "big.bin").unlink()  # not found again: no new upload opens after the forget
        result = ros.tool("forget", str(file_id))
        assert result.returncode == 0, result
        deadline = time.monotonic() + 20
        while keys_and_uploads(server, "rover7/")[1]:
            assert time.monotonic() < deadline, "the forgotten file's multipart upload is still open"
            time.sleep(0.2)
    finally:
        ros.stop_all()
        proxy.stop()
        server.remove()


def test_what_an_endpoint_does_is_found_again_after_forget_stores(tmp_path):
    """Kept per endpoint for the process, so another engine later on the same port (tests reuse ports) is taken for
    the first one until forget_stores(), which test/conftest.py calls before every test."""
    seaweed = SeaweedS3(str(tmp_path / "seaweed"))
    seaweed.start()
    try:
        assert create_target("store", seaweed.target_options()).verification() == STORE_CHECKSUM
    finally:
        seaweed.remove()
    moto = MotoS3(str(tmp_path / "moto"))
    moto.s3_port = seaweed.s3_port
    moto.start()
    try:
        target = create_target("store", moto.target_options())
        assert target.verification() == STORE_CHECKSUM  # what was found about the endpoint, not about moto
        forget_stores()
        assert target.verification() == ETAG_MD5
    finally:
        moto.remove()


def test_a_multipart_object_is_read_back_only_where_the_store_computed_nothing_to_check_it_by(engine, proxy,
                                                                                               tmp_path):
    """SeaweedFS: the composite checksum; moto: its ETag, the MD5 of the parts' MD5s (each part's ETag checked as it
    came back, so a damaged part is sent again at once); rclone: its ETag is the whole object's MD5, which filesync
    did not compute: read back."""
    local = tmp_path / "big.bin"
    write_file(str(local), PART + 1000)
    data = local.read_bytes()
    target = create_target("store", engine.target_options(endpoint_url=proxy.endpoint, vehicle=tmp_path.name,
                                                          part_size=PART, multipart_threshold=PART, max_attempts=1))
    target.verification()
    with open(local, "rb") as stream:
        target.write("big.bin", stream, 0, len(data), lambda done, note=None: None)
    target.publish("big.bin", len(data))
    sent = count_sends(target)
    assert target.digest("big.bin", "sha256") == hashlib.sha256(data).hexdigest()
    assert sent == ["HeadObject"] + (["GetObject"] if engine.name == "rclone" else [])
    if VERIFIED_BY[engine.name] == ETAG_MD5:
        proxy.damaging = True
        with open(local, "rb") as stream, pytest.raises(FileError, match=r"UploadPart \d of .*damaged on the way"):
            target.write("again.bin", stream, 0, len(data), lambda done, note=None: None)
        target.discard("again.bin")


def test_a_part_damaged_on_the_way_is_sent_again_or_the_upload_starts_over(engine, proxy, tmp_path):
    """Part 1 arrives whole, part 2 damaged; the engine then resumes at part 2. moto and SeaweedFS take part 2 again;
    rclone serve s3 has streamed it into place and answers 501 NotImplemented to any other bytes for it: that is a
    StartOver (the upload aborted, nothing left open), not a TransientError retried for ever (seen in CI)."""
    local = tmp_path / "big.bin"
    write_file(str(local), 2 * PART + 1000)
    data = local.read_bytes()
    target = create_target("store", engine.target_options(endpoint_url=proxy.endpoint, vehicle=tmp_path.name,
                                                          part_size=PART, multipart_threshold=PART, max_concurrency=1))
    target.verification()

    def damage_after_the_first_part(done, note=None):
        proxy.damaging = done >= PART
    with open(local, "rb") as stream, pytest.raises(FileError):
        target.write("big.bin", stream, 0, len(data), damage_after_the_first_part)
    proxy.damaging = False
    held = []
    with open(local, "rb") as stream:  # the target reads the staged file at absolute offsets
        if engine.name == "rclone":
            with pytest.raises(StartOver, match="will not replace a part it holds"):
                target.write("big.bin", stream, PART, len(data), lambda done, note=None: held.append(done))
            assert keys_and_uploads(engine, tmp_path.name) == ([], [])  # the refused upload is aborted
            target.write("big.bin", stream, 0, len(data), lambda done, note=None: held.append(done))
        else:
            target.write("big.bin", stream, PART, len(data), lambda done, note=None: held.append(done))
    assert held[-1] == len(data)
    target.publish("big.bin", len(data))
    assert target.digest("big.bin", "sha256") == hashlib.sha256(data).hexdigest()
    assert engine.client().get_object(Bucket=BUCKET, Key=target.key_for("big.bin"))["Body"].read() == data


def record_requests(monkeypatch):
    """A list that gets (operation, key) for every request any S3 client of this process makes."""
    made = []
    original = botocore.client.BaseClient._make_api_call

    def recording(client, operation, params):
        made.append((operation, params.get("Key", "")))
        return original(client, operation, params)
    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", recording)
    return made


def test_a_small_file_is_one_put_checked_by_its_answer(engine, tmp_path, monkeypatch):
    """Issue 18: a PutObject with If-None-Match: * refuses a taken key itself, so the engine does not look at the key
    first, and checks the copy by the PUT's answer (SeaweedFS checked the SHA-256 sent, moto's and rclone's ETag is
    the body's MD5): a HEAD after it would answer what the store recorded from that PUT. On a store that ignores
    If-None-Match (rclone) the key is looked at just before the PUT, once."""
    target = engine.target_options(vehicle=tmp_path.name, part_size=PART, multipart_threshold=PART)
    create_target("probe", target).verification()
    made = record_requests(monkeypatch)
    runner = LocalRunner(runner_config(tmp_path, target))
    try:
        runner.run_until_settled(timeout=60)
        assert {r.state for r in runner.ledger.files()} == {"uploaded"}
    finally:
        runner.close()
    key = f"{tmp_path.name}/inbox/small.bin"
    before = ["HeadObject"] if engine.name == "rclone" else []
    assert [operation for operation, made_key in made if made_key == key] == before + ["PutObject"]


@pytest.mark.parametrize("policy", ["keep_both", "park"])
def test_a_taken_key_found_by_the_put_itself_is_never_replaced(engine, tmp_path, monkeypatch, policy):
    """The key the engine did not look at first holds other bytes: the PUT is refused (If-None-Match, or the HEAD
    just before on rclone) and on_conflict applies as if it had looked: a conflict name, or parked."""
    target = engine.target_options(vehicle=tmp_path.name, part_size=PART, multipart_threshold=PART)
    config = runner_config(tmp_path, target)
    config["targets"]["store"]["on_conflict"] = policy
    key = f"{tmp_path.name}/inbox/small.bin"
    engine.client().put_object(Bucket=BUCKET, Key=key, Body=b"another file")
    made = record_requests(monkeypatch)
    runner = LocalRunner(config)
    try:
        runner.run_until_settled(timeout=60)
        small = runner.ledger.find("inbox", "small.bin")
    finally:
        runner.close()
    assert engine.client().get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"another file"
    keys = keys_and_uploads(engine, f"{tmp_path.name}/inbox/small")[0]
    if policy == "park":
        assert small.state == "failed" and "on_conflict: park" in small.error and keys == [key]
    else:
        assert small.state == "uploaded" and len(keys) == 2
        conflict = next(name for name in keys if name != key)
        assert engine.client().get_object(Bucket=BUCKET, Key=conflict)["Body"].read() == \
            (tmp_path / "inbox" / "small.bin").read_bytes()
    # the refused PUT came first; on rclone, which ignores If-None-Match, publish()'s own look just before it
    assert [operation for operation, made_key in made if made_key == key][0] == \
        ("HeadObject" if engine.name == "rclone" else "PutObject")
