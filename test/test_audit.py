"""`filesync audit TARGET`: files are delivered for real (LocalRunner: a folder source into a folder target, and into
SeaweedFS through the s3 target), then changed behind filesync's back; the audit must list exactly those, with its
exit status. The tool runs as a process, as a person runs it: with --config/--database (no ROS master), and once over
a real ledger node and the config parameter.
"""
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from filesync.engine.runner import LocalRunner
from support.rclone_s3 import RcloneS3
from support.seaweedfs import SeaweedS3
from test_cli import ENVIRONMENT, Ros

# the tool imports the generated messages, which live in the catkin workspace's devel space
pytestmark = pytest.mark.skipif(ENVIRONMENT is None, reason="the catkin workspace is not built: run `make setup`")

MiB = 1 << 20
FILES = {"a.bin": 1000, "b/c.bin": 70_000, "d.bin": 3000, "big.bin": 6 * MiB + 5}


def deliver(tmp_path, target):
    """Move FILES from a folder into `target` (options) with a LocalRunner; return (config path, database, config)."""
    inbox = tmp_path / "inbox"
    if target["kind"] == "folder":
        os.makedirs(target["path"], exist_ok=True)
    for name, size in FILES.items():
        (inbox / name).parent.mkdir(parents=True, exist_ok=True)
        (inbox / name).write_bytes(os.urandom(size))
    config = {"staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
              "sources": {"inbox": {"kind": "folder", "path": str(inbox), "min_age": 0.0}},
              "targets": {"store": target},
              "pipelines": [{"source": "inbox", "targets": ["store"]}]}
    runner = LocalRunner(config)
    try:
        runner.run_until_settled(timeout=30)
        assert {r.state for r in runner.ledger.files()} == {"uploaded"}
    finally:
        runner.close()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path), config["database"], config


def run_audit(*arguments, errors=None):
    """`filesync audit ARGUMENTS` as a process: (exit status, stdout); stderr appended to `errors` if given."""
    result = subprocess.run([sys.executable, "-c", "import sys; from filesync.cli import main; sys.exit(main())",
                             "audit", *arguments], env=ENVIRONMENT, capture_output=True, text=True, timeout=120)
    if errors is not None:
        errors.append(result.stderr)
    return result.returncode, result.stdout


def check_findings(config_path, database):
    """After one file was deleted and one changed: both listed, in one line each, the rest counted good."""
    status, text = run_audit("store", "--config", config_path, "--database", database)
    assert status == 1, text
    lines = text.strip().splitlines()
    assert len(lines) == 3, text
    lines[:2] = sorted(lines[:2], key=lambda line: not line.startswith("MISSING"))  # in id order: listing order
    assert re.match(r"MISSING: inbox/a\.bin \(id \d+, version 1\) at \S+a\.bin: the target holds no such file$",
                    lines[0]), text
    assert lines[1].startswith("DIFFERENT CONTENT: inbox/d.bin (id "), text
    assert "sha256 is " in lines[1] and "the ledger's is " in lines[1]
    assert lines[2] == "audit of store: 4 delivered version(s) checked, 2 good, 1 different content, 1 missing", text
    status, text = run_audit("store", "--config", config_path, "--database", database, "--json")
    report = json.loads(text)
    assert status == 1 and report["checked"] == 4 and report["good"] == 2
    assert sorted((p["path"], p["kind"]) for p in report["problems"]) == [("a.bin", "missing"),
                                                                          ("d.bin", "different content")]


def test_folder_target_all_good_then_one_deleted_and_one_changed(tmp_path):
    outbox = tmp_path / "outbox"
    config_path, database, _ = deliver(tmp_path, {"kind": "folder", "path": str(outbox)})
    status, text = run_audit("store", "--config", config_path, "--database", database)
    assert (status, text) == (0, "audit of store: 4 delivered version(s) checked, 4 good\n")
    (outbox / "a.bin").unlink()
    data = bytearray((outbox / "d.bin").read_bytes())
    data[1500] ^= 0xFF  # same size, one byte changed
    (outbox / "d.bin").write_bytes(bytes(data))
    check_findings(config_path, database)
    (outbox / "b" / "c.bin").write_bytes(b"short")
    status, text = run_audit("store", "--config", config_path, "--database", database)
    assert status == 1 and "DIFFERENT SIZE: inbox/b/c.bin" in text and "holds 5 bytes, the ledger says 70000" in text


def test_s3_target_checks_checksum_and_metadata(tmp_path):
    server = SeaweedS3(str(tmp_path / "seaweed"))
    server.start()
    try:
        options = server.target_options(vehicle="rover7", part_size=5 * MiB, multipart_threshold=5 * MiB)
        config_path, database, _ = deliver(tmp_path, options)
        status, text = run_audit("store", "--config", config_path, "--database", database)
        assert (status, text) == (0, "audit of store: 4 delivered version(s) checked, 4 good\n"), text
        client = server.client()
        bucket = options["bucket"]
        client.delete_object(Bucket=bucket, Key="rover7/inbox/a.bin")
        # d.bin replaced by somebody else's bytes of the same size, without filesync's metadata
        client.put_object(Bucket=bucket, Key="rover7/inbox/d.bin", Body=os.urandom(3000))
        check_findings(config_path, database)
        # the bytes unchanged but the metadata rewritten: only the metadata check sees it
        client.copy_object(Bucket=bucket, Key="rover7/inbox/b/c.bin", MetadataDirective="REPLACE",
                           CopySource={"Bucket": bucket, "Key": "rover7/inbox/b/c.bin"},
                           Metadata={"sha256": "0" * 64, "vehicle": "rover7"})
        status, text = run_audit("store", "--config", config_path, "--database", database)
        assert status == 1 and "STORED FACTS: inbox/b/c.bin" in text and \
            f"x-amz-meta-sha256 is {'0' * 64}, the ledger's is" in text, text
        server.stop()
        errors = []
        assert run_audit("store", "--config", config_path, "--database", database, errors=errors) == (2, "")
        assert errors[-1].startswith("filesync audit: cannot check target store: "), errors
    finally:
        server.remove()


def test_cannot_check_exits_2_with_one_line(tmp_path):
    config_path, database, config = deliver(tmp_path, {"kind": "folder", "path": str(tmp_path / "outbox")})
    errors = []
    assert run_audit("nowhere", "--config", config_path, "--database", database, errors=errors)[0] == 2
    assert errors[-1] == "filesync audit: targets: no target named 'nowhere' (known: store)\n"
    assert run_audit("store", "--config", config_path, "--database", str(tmp_path / "none.db"),
                     errors=errors)[0] == 2
    assert errors[-1] == f"filesync audit: --database: no such file {tmp_path / 'none.db'}\n"
    os.rename(tmp_path / "outbox", tmp_path / "outbox.away")  # the target's folder is gone (a drive unmounted)
    assert run_audit("store", "--config", config_path, "--database", database, errors=errors) == (2, "")
    assert errors[-1].startswith("filesync audit: cannot check target store: ") and errors[-1].count("\n") == 1, \
        errors[-1]


def test_over_the_ledger_node(tmp_path):
    """As a person runs it beside sync.launch: the config from the parameter, the ledger over its query service."""
    outbox = tmp_path / "outbox"
    _, database, config = deliver(tmp_path, {"kind": "folder", "path": str(outbox)})
    (outbox / "b" / "c.bin").unlink()
    ros = Ros(str(tmp_path / "ros"))
    os.makedirs(ros.workdir)
    try:
        ros.start_master()
        ros.set_config(config)
        ros.start_node("ledger")
        result = ros.tool("--timeout", "20", "audit", "store")
        assert result.returncode == 1, result
        assert result.stdout.splitlines()[0].startswith("MISSING: inbox/b/c.bin (id "), result.stdout
        assert result.stdout.splitlines()[-1] == "audit of store: 4 delivered version(s) checked, 3 good, 1 missing"
    finally:
        ros.stop_all()


def test_a_target_that_names_what_it_stores_cannot_be_audited():
    """Flight Review keeps what it receives under names of its own: nothing to look up, said in one line."""
    from filesync.audit import CannotAudit, audit
    from filesync.devices import create_target
    target = create_target("review", {"kind": "flight_review", "server": "http://127.0.0.1:9"})
    with pytest.raises(CannotAudit, match=r"^target review \(flight_review\) names what it stores itself"):
        audit(target, [])


def test_s3_a_same_size_overwrite_that_keeps_the_metadata_is_found(tmp_path):
    """Somebody else's bytes of the same size under the key, with filesync's x-amz-meta-sha256 copied: the metadata and
    the size agree, only the bytes the store holds can tell."""
    server = SeaweedS3(str(tmp_path / "seaweed"))
    server.start()
    try:
        options = server.target_options(vehicle="rover7", part_size=5 * MiB, multipart_threshold=5 * MiB)
        config_path, database, _ = deliver(tmp_path, options)
        client, bucket = server.client(), options["bucket"]
        for key, size in (("rover7/inbox/d.bin", 3000), ("rover7/inbox/big.bin", FILES["big.bin"])):
            metadata = client.head_object(Bucket=bucket, Key=key)["Metadata"]
            client.put_object(Bucket=bucket, Key=key, Body=os.urandom(size), Metadata=metadata)
        status, text = run_audit("store", "--config", config_path, "--database", database)
        assert status == 1, text
        assert sorted(line.split(":")[0] + ":" + line.split(":")[1].split(" (")[0] for line in
                      text.splitlines()[:-1]) == ["DIFFERENT CONTENT: inbox/big.bin", "DIFFERENT CONTENT: inbox/d.bin"]
        assert text.splitlines()[-1] == "audit of store: 4 delivered version(s) checked, 2 good, 2 different content"
    finally:
        server.remove()


def test_s3_read_back_reads_every_object(tmp_path):
    """--read-back reads the bytes, also where the store's own SHA-256 would have answered."""
    from filesync.audit import audit, read_ledger_file
    from filesync.devices import create_target
    server = SeaweedS3(str(tmp_path / "seaweed"))
    server.start()
    try:
        options = server.target_options(vehicle="rover7", part_size=5 * MiB, multipart_threshold=5 * MiB)
        _, database, _ = deliver(tmp_path, options)
        target = create_target("store", options)
        gets = []
        target._client().meta.events.register("before-parameter-build.s3.GetObject",
                                              lambda params, **_: gets.append(params["Key"]))
        report = audit(target, read_ledger_file(database, "store"), read_back=True)
        assert (report.checked, report.good, report.problems) == (4, 4, [])
        assert sorted(set(gets)) == sorted(f"rover7/inbox/{name}" for name in FILES)
    finally:
        server.remove()


def test_s3_on_rclone_whose_metadata_keys_are_capitalised(tmp_path):
    """`rclone serve s3` answers x-amz-meta-sha256 as "Sha256": the metadata check must not flag every object."""
    server = RcloneS3(str(tmp_path / "rclone"))
    server.start()
    try:
        options = server.target_options(vehicle="rover7", part_size=5 * MiB, multipart_threshold=5 * MiB)
        config_path, database, _ = deliver(tmp_path, options)
        status, text = run_audit("store", "--config", config_path, "--database", database)
        assert (status, text) == (0, "audit of store: 4 delivered version(s) checked, 4 good\n"), text
    finally:
        server.remove()
