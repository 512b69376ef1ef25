"""SFTP upload: filesync's sftp target against OpenSSH's own `sftp -b` (batch put), to one sshd on 127.0.0.1
(test/support/sshd.py), side by side in one run, alternating, N rounds.

Each upload runs in a child process. `sftp`: the whole process (with the ssh it runs: RUSAGE_CHILDREN), connecting
included. filesync: from write() to the end of publish() (its fsync and rename) on a connection made before, timed
inside the child, since a long-running worker pays Python's start, its imports and the connection once, not per
file (the whole child's CPU, all of that included, is shown as well).
Prints MB/s, the ratio filesync/sftp per round, CPU seconds per GiB and filesync's peak memory (max RSS).

    .venv/bin/python bench/sftp_bench.py [--mib 200] [--rounds 3]
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "src"), os.path.join(HERE, "..", "test")]

GIB = 1 << 30


def upload_child(options_json, staged, name):
    """In the child: one upload through SftpTarget (write, then publish with its fsync and rename)."""
    from filesync.devices import create_target
    target = create_target("bench", json.loads(options_json))
    size = os.path.getsize(staged)
    target.probe()  # connected once per worker, not per file (paramiko's first connection also imports its ciphers)
    started, cpu = time.perf_counter(), time.process_time()
    with open(staged, "rb") as stream:
        target.write(name, stream, 0, size, lambda done, note=None: None)
    written, write_cpu = time.perf_counter() - started, time.process_time() - cpu
    target.publish(name, size)
    print(json.dumps({"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu,
                      "write_seconds": written, "write_cpu": write_cpu}))
    target.close()


def run_child(command, **kwargs):
    """Run `command`; (seconds, CPU seconds of it and its children, its own max RSS in KiB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(command, **kwargs)
    output = process.stdout.read() if process.stdout else b""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if process.returncode:
        raise RuntimeError(f"{command[0]} failed with {process.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if output:  # the child timed its own upload: (seconds, cpu, max RSS, the whole child's cpu)
        inside = json.loads(output)
        return inside["seconds"], inside["cpu"], usage.ru_maxrss, cpu
    return seconds, cpu, usage.ru_maxrss, cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--upload-child", nargs=3, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.upload_child:
        upload_child(*arguments.upload_child)
        return
    from support.sshd import USER, Sshd

    size = arguments.mib << 20
    work = tempfile.mkdtemp(prefix="sftp-bench.")
    try:
        staged = os.path.join(work, "staged.bin")
        with open(staged, "wb") as handle:
            for _ in range(arguments.mib):
                handle.write(os.urandom(1 << 20))
        with Sshd(os.path.join(work, "sshd"), log_level="INFO") as server:
            options = json.dumps(server.options())
            sftp_command = ["sftp", "-q", "-b", "-", "-i", server.client_key, "-P", str(server.port),
                            "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                            "-o", "BatchMode=yes", f"{USER}@127.0.0.1"]
            rows = []
            for round_number in range(1, arguments.rounds + 1):
                results = {}
                for tool in (("sftp", "filesync") if round_number % 2 else ("filesync", "sftp")):
                    destination = os.path.join(server.storage, f"{tool}.bin")
                    if tool == "sftp":
                        results[tool] = _run_sftp(sftp_command, staged, destination)
                    else:
                        results[tool] = run_child([sys.executable, os.path.abspath(__file__), "--upload-child",
                                                   options, staged, f"{tool}.bin"], stdout=subprocess.PIPE)
                    if os.path.getsize(destination) != size:
                        raise RuntimeError(f"{tool} left {os.path.getsize(destination)} bytes, expected {size}")
                    os.remove(destination)
                rows.append(results)
                _print_round(round_number, results, size)
            _print_summary(rows, size)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_sftp(command, staged, destination):
    """`sftp -b -` with one put, fed on stdin."""
    with tempfile.TemporaryFile() as stdin:
        stdin.write(f"put {staged} {destination}\n".encode())
        stdin.seek(0)
        return run_child(command, stdin=stdin, stdout=subprocess.DEVNULL)


def _rate(size, seconds):
    return size / seconds / 1e6


def _print_round(number, results, size):
    ours, theirs = results["filesync"], results["sftp"]
    print(f"round {number}: filesync {_rate(size, ours[0]):6.1f} MB/s ({ours[1] * GIB / size:5.2f} CPU s/GiB, "
          f"{ours[3] * GIB / size:5.2f} with start, max RSS {ours[2] / 1024:.0f} MiB)   sftp {_rate(size, theirs[0]):6.1f} MB/s "
          f"({theirs[1] * GIB / size:5.2f} CPU s/GiB)   ratio {theirs[0] / ours[0]:.2f}", flush=True)


def _print_summary(rows, size):
    def median(values):
        values = sorted(values)
        return values[len(values) // 2]
    ours = [row["filesync"] for row in rows]
    theirs = [row["sftp"] for row in rows]
    ratios = [row["sftp"][0] / row["filesync"][0] for row in rows]
    print()
    print(f"| {size >> 20} MiB upload, {len(rows)} rounds (median) | MB/s | CPU s/GiB | ratio to sftp |")
    print("| --- | --- | --- | --- |")
    print(f"| OpenSSH `sftp -b` (sftp + ssh) | {median(_rate(size, r[0]) for r in theirs):.1f} | "
          f"{median(r[1] * GIB / size for r in theirs):.2f} | 1.00 |")
    print(f"| filesync sftp target (paramiko) | {median(_rate(size, r[0]) for r in ours):.1f} | "
          f"{median(r[1] * GIB / size for r in ours):.2f} ({median(r[3] * GIB / size for r in ours):.2f} with "
          f"Python's start) | {median(ratios):.2f} "
          f"(min {min(ratios):.2f}) |")
    print(f"filesync's peak memory (max RSS): {max(r[2] for r in ours) / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
