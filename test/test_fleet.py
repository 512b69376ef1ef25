"""A fleet into one bucket: three vehicles, each a LocalRunner process of its own (its own folder source, staging and
ledger, like three companion computers), upload at once into one SeaweedFS bucket under "{vehicle}/{source}/{path}".
Every vehicle has files of the same names (and one multipart-sized file), so only the vehicle prefix keeps them
apart: every object must hold its own vehicle's bytes, with its SHA-256 and vehicle as metadata.
"""
import hashlib
import json
import os
import subprocess
import sys

from support.seaweedfs import BUCKET, SeaweedS3

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20
VEHICLES = ("rover1", "rover2", "drone-7")
# the same names on every vehicle; flight.ulg goes as a multipart upload (5 MiB parts)
FILES = {"logs/flight.ulg": 6 * MiB + 123, "logs/params.txt": 2000, "video/cam0.bin": 300_000, "notes.txt": 11}


def vehicle_config(tmp_path, vehicle, server):
    home = tmp_path / vehicle
    inbox = home / "inbox"
    files = {}
    for name, size in FILES.items():
        path = inbox / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(size)
        path.write_bytes(data)
        files[name] = data
    config = {
        "staging_dir": str(home / "staging"), "database": str(home / "db" / "ledger.db"),
        "scan_interval": 0.5, "poll_interval": 0.5,
        "sources": {"px4": {"kind": "folder", "path": str(inbox), "min_age": 0.0}},
        "targets": {"fleet": server.target_options(vehicle=vehicle, key_template="{vehicle}/{source}/{path}",
                                                   part_size=5 * MiB, multipart_threshold=5 * MiB)},
        "pipelines": [{"source": "px4", "targets": ["fleet"]}],
    }
    config_path = home / "config.json"
    config_path.write_text(json.dumps(config))
    return str(config_path), files


def test_three_vehicles_upload_into_one_bucket_at_once(tmp_path):
    server = SeaweedS3(str(tmp_path / "seaweed"))
    server.start()
    processes = []
    try:
        expected = {}
        configs = []
        for vehicle in VEHICLES:
            config_path, files = vehicle_config(tmp_path, vehicle, server)
            configs.append(config_path)
            expected.update({f"{vehicle}/px4/{name}": (vehicle, data) for name, data in files.items()})
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [os.path.join(HERE, "..", "src"), HERE, os.environ.get("PYTHONPATH", "")]))
        for config_path in configs:  # all three at once
            log = open(config_path + ".log", "wb")
            processes.append(subprocess.Popen([sys.executable, os.path.join(HERE, "support", "run_local.py"),
                                               config_path, "--until-settled"], env=environment, stdout=log,
                                              stderr=subprocess.STDOUT))
            log.close()
        for config_path, process in zip(configs, processes):
            assert process.wait(90) == 0, open(config_path + ".log").read()[-3000:]

        client = server.client()
        listed = client.list_objects_v2(Bucket=BUCKET)
        assert not listed.get("IsTruncated")
        keys = sorted(entry["Key"] for entry in listed.get("Contents", []))
        assert keys == sorted(expected), keys  # every file, once, under its own vehicle: no key collided
        for key, (vehicle, data) in expected.items():
            body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            assert body == data, key
            metadata = client.head_object(Bucket=BUCKET, Key=key)["Metadata"]
            assert metadata["sha256"] == hashlib.sha256(data).hexdigest(), key
            assert (metadata["vehicle"], metadata["source"]) == (vehicle, "px4"), key
            assert metadata["version-time"].endswith("Z"), key
        uploads = client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
        assert uploads == [], uploads  # nothing left behind to be billed
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        server.remove()
