"""S3 upload speed: our `s3` target against boto3's own upload_file (s3transfer) to one SeaweedFS on 127.0.0.1.

  ours         S3Target.write + publish as the engine calls them (the file's SHA-256 given by set_context, as the
               engine does): parts of 8 MiB, max_concurrency at a time, each hashed (SHA-256) before it goes and
               checked by the store, the multipart object checked by a HEAD after completion
  upload_file  boto3's S3Transfer defaults: 8 MiB parts, 10 threads, the SDK's default CRC32 trailers
Each upload runs in a process of its own, so its CPU time (user + system) and peak RSS (VmHWM) are its own; the weed
process's CPU is counted too. Both send the same file to a new key each run (after a sync, so that the last upload's
writeback is not counted against the next), and the object's bytes are checked against the file's SHA-256. Runs
alternate, ours first in one round and upload_file first in the next, so that a noisy neighbour hurts both alike, and
each pair gives a ratio. `measure()` is what bench/run.py calls for `make bench`.

Run alone: .venv/bin/python bench/s3_bench.py [--size BYTES] [--runs N] [--concurrency 4,8]
"""
import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GIB = 1 << 30
MIB = 1 << 20


def _paths():
    sys.path[:0] = [os.path.join(ROOT, "test")]
    try:
        import filesync.devices  # noqa: F401 - from the workspace where it is sourced
    except ImportError:
        sys.path.insert(0, os.path.join(ROOT, "src"))


def child(kind, options, local, key, sha256, concurrency):
    """One upload in this process; prints {seconds, cpu, peak_rss} as JSON."""
    _paths()
    import boto3
    from botocore.config import Config
    from filesync.devices import create_target
    size = os.path.getsize(local)
    if kind == "ours":
        target = create_target("bench", {**options, "key_template": "{path}", "max_concurrency": concurrency})
        target.set_context(sha256=sha256)
        target.probe()  # connected before the clock starts, as a running worker is
    else:
        client = boto3.client("s3", endpoint_url=options["endpoint_url"], region_name="us-east-1",
                              aws_access_key_id=options["access_key_id"],
                              aws_secret_access_key=options["secret_access_key"],
                              config=Config(s3={"addressing_style": "path"}, read_timeout=120))
        client.head_bucket(Bucket=options["bucket"])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    if kind == "ours":
        with open(local, "rb") as stream:
            target.write(key, stream, 0, size, lambda done, note=None: None)
        target.publish(key, size)
    else:
        client.upload_file(local, options["bucket"], key)
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))
    print(json.dumps({"seconds": seconds, "cpu": cpu, "peak_rss": peak}))


def write_random_file(path, size):
    """`size` random bytes written in 1 MiB blocks; returns their SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        left = size
        while left:
            block = os.urandom(min(MIB, left))
            digest.update(block)
            handle.write(block)
            left -= len(block)
    return digest.hexdigest()


def _server_cpu(server):
    import psutil
    times = psutil.Process(server.process.pid).cpu_times()
    return times.user + times.system


def _stored_sha256(server, key):
    digest = hashlib.sha256()
    body = server.client(read_timeout=120).get_object(Bucket=server.buckets[0], Key=key)["Body"]
    for block in body.iter_chunks(MIB):
        digest.update(block)
    return digest.hexdigest()


def upload_once(server, kind, local, sha256, key, concurrency=4):
    """Run one upload in a child process; returns {seconds, cpu, peak_rss, weed_cpu, identical}."""
    os.sync()  # the previous upload's writeback must not land in this one's time
    weed = _server_cpu(server)
    answer = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", kind,
                             json.dumps(server.target_options()), local, key, sha256, str(concurrency)],
                            check=True, capture_output=True, text=True, timeout=900)
    result = json.loads(answer.stdout.strip().splitlines()[-1])
    result["weed_cpu"] = _server_cpu(server) - weed
    result["identical"] = _stored_sha256(server, key) == sha256
    server.client().delete_object(Bucket=server.buckets[0], Key=key)  # the store's disk holds one copy at a time
    return result


def measure(workdir, size, runs, concurrencies=(4,), small_size=64 * MIB, log=sys.stderr):
    """Paired runs of ours (each concurrency) and upload_file on one SeaweedFS; returns {uploader: [result, ...]}
    with the runs in order, plus 'ours small' (one run of a `small_size` file, for memory flat in file size)."""
    _paths()
    from support.seaweedfs import SeaweedS3
    os.makedirs(workdir, exist_ok=True)
    local = os.path.join(workdir, "s3bench.bin")
    sha256 = write_random_file(local, size)
    small = os.path.join(workdir, "s3bench-small.bin")
    small_sha256 = write_random_file(small, small_size)
    server = SeaweedS3(os.path.join(workdir, "seaweed"))
    server.start()
    kinds = [(f"ours, max_concurrency {c}", "ours", c) for c in concurrencies]
    kinds.append(("upload_file", "upload_file", 10))
    results = {name: [] for name, _, _ in kinds}
    try:
        results["ours small"] = [upload_once(server, "ours", small, small_sha256, "small", concurrencies[0])]
        for run in range(runs):
            for name, kind, concurrency in (kinds if run % 2 == 0 else kinds[::-1]):  # neither always goes first
                result = upload_once(server, kind, local, sha256, f"{kind}-{concurrency}-{run}", concurrency)
                results[name].append(result)
                print(f"  s3 {name:24} run {run}: {size / result['seconds'] / 1e6:6.1f} MB/s, CPU {result['cpu']:.2f}"
                      f" s, weed {result['weed_cpu']:.2f} s, peak RSS {result['peak_rss'] / MIB:.0f} MiB, identical "
                      f"{result['identical']}", file=log, flush=True)
    finally:
        server.remove()
        os.remove(local)
        os.remove(small)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=GIB)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", default="4", help="ours: comma-separated max_concurrency values")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, options, local, key, sha256, concurrency = args.child
        return child(kind, json.loads(options), local, key, sha256, int(concurrency))
    concurrencies = tuple(int(c) for c in args.concurrency.split(","))
    with tempfile.TemporaryDirectory(prefix="s3bench-", dir="/var/tmp") as directory:
        results = measure(directory, args.size, args.runs, concurrencies)
    gib = args.size / GIB
    print(f"\nFile: {args.size:,} bytes, {args.runs} paired runs; SeaweedFS weed mini on 127.0.0.1.\n")
    print("| uploader | MB/s per run | / upload_file per pair | CPU s/GiB | weed CPU s/GiB | peak RSS MiB | identical |")
    print("|---|---|---|---:|---:|---:|---|")
    reference = results["upload_file"]
    for name, runs in results.items():
        if name == "ours small":
            continue
        rates = ", ".join(f"{args.size / r['seconds'] / 1e6:.0f}" for r in runs)
        ratios = ", ".join(f"{u['seconds'] / r['seconds']:.2f}" for r, u in zip(runs, reference))
        cpu = sorted(r["cpu"] for r in runs)[len(runs) // 2] / gib
        weed = sorted(r["weed_cpu"] for r in runs)[len(runs) // 2] / gib
        peak = max(r["peak_rss"] for r in runs) / MIB
        print(f"| {name} | {rates} | {ratios} | {cpu:.2f} | {weed:.2f} | {peak:.0f} | "
              f"{'yes' if all(r['identical'] for r in runs) else 'NO'} |")
    small = results["ours small"][0]
    print(f"\nours, 64 MiB file: peak RSS {small['peak_rss'] / MIB:.0f} MiB (memory flat in file size)")


if __name__ == "__main__":
    sys.exit(main())
