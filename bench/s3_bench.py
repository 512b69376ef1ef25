"""S3 upload speed: our `s3` target against boto3's own upload_file (s3transfer) to one SeaweedFS on 127.0.0.1.

  ours         S3Target.write + publish: parts one after another, each hashed (SHA-256) before it goes, the whole
               file hashed once more for its metadata, a HEAD after completion (what filesync does for every file)
  ours, sha256 given   the same, told the file's SHA-256 by set_context (as the engine could: it has it)
  upload_file  boto3's S3Transfer defaults: 8 MiB parts, 10 threads, no checksum but the SDK's default CRC32
Both send the same file to a new key each run; the object's bytes are checked against the file's SHA-256. CPU is our
process's user+system time (both clients run in it) and the weed process's, each per GiB sent. Runs alternate so that
a noisy neighbour hurts both alike.

Run: .venv/bin/python bench/s3_bench.py [--size BYTES] [--runs N] [--part-size BYTES]
"""
import argparse
import hashlib
import os
import resource
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "src"), os.path.join(HERE, "..", "test")]

import psutil  # noqa: E402

from filesync.devices import create_target  # noqa: E402
from support.seaweedfs import BUCKET, SeaweedS3  # noqa: E402

GIB = 1 << 30


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_cpu(server):
    times = psutil.Process(server.process.pid).cpu_times()
    return times.user + times.system


def ours(server, local, size, key, part_size, sha256=""):
    target = create_target("bench", server.target_options(key_template="{path}", part_size=part_size))
    if sha256:
        target.set_context(sha256=sha256)
    with open(local, "rb") as stream:
        target.write(key, stream, 0, size, lambda done, note=None: None)
    target.publish(key, size)
    target.close()


def ours_sha256_given(server, local, size, key, part_size):
    with open(local + ".sha256") as handle:
        ours(server, local, size, key, part_size, handle.read())


def upload_file(server, local, size, key, part_size):
    client = server.client(read_timeout=120)
    client.upload_file(local, BUCKET, key)


def stored_sha256(server, key):
    digest = hashlib.sha256()
    for block in server.client(read_timeout=120).get_object(Bucket=BUCKET, Key=key)["Body"].iter_chunks(1 << 20):
        digest.update(block)
    return digest.hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256 << 20)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--part-size", type=int, default=0, help="ours: 0 chooses from the size (8 MiB here)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="s3bench-") as directory:
        local = os.path.join(directory, "file.bin")
        digest = hashlib.sha256()
        with open(local, "wb") as handle:
            for _ in range(0, args.size, 1 << 20):
                block = os.urandom(min(1 << 20, args.size - handle.tell()))
                digest.update(block)
                handle.write(block)
        expected = digest.hexdigest()
        with open(local + ".sha256", "w") as handle:
            handle.write(expected)
        server = SeaweedS3(os.path.join(directory, "seaweed"))
        server.start()
        uploaders = (("ours", ours), ("ours, sha256 given", ours_sha256_given), ("upload_file", upload_file))
        rows = {name: [] for name, _ in uploaders}
        try:
            for run in range(args.runs):
                for number, (name, upload) in enumerate(uploaders):
                    key = f"{number}-{run}.bin"
                    cpu, weed, started = cpu_seconds(), server_cpu(server), time.monotonic()
                    upload(server, local, args.size, key, args.part_size)
                    elapsed = time.monotonic() - started
                    row = (elapsed, cpu_seconds() - cpu, server_cpu(server) - weed,
                           stored_sha256(server, key) == expected)
                    rows[name].append(row)
                    print(f"{name:18} run {run}: {args.size / elapsed / 1e6:7.1f} MB/s, client CPU {row[1]:.2f} s, "
                          f"weed CPU {row[2]:.2f} s, identical: {row[3]}", file=sys.stderr)
        finally:
            server.remove()
    gib = args.size / GIB
    best = {name: min(runs) for name, runs in rows.items()}
    print(f"\nFile: {args.size:,} bytes, {args.runs} runs each, best run shown; SeaweedFS weed mini on 127.0.0.1.\n")
    print("| uploader | MB/s | / upload_file | client CPU s/GiB | weed CPU s/GiB | bytes identical |")
    print("|---|---:|---:|---:|---:|---|")
    for name, (elapsed, cpu, weed, _) in best.items():
        identical = all(row[3] for row in rows[name])
        ratio = best["upload_file"][0] / elapsed
        print(f"| {name} | {args.size / elapsed / 1e6:.1f} | {ratio:.2f} | {cpu / gib:.2f} | {weed / gib:.2f} | "
              f"{'yes' if identical else 'NO'} |")


if __name__ == "__main__":
    main()
