"""SFTP upload: filesync's sftp target against OpenSSH's own `sftp -b` (batch put), to one sshd on 127.0.0.1
(test/support/sshd.py), side by side in one run, alternating, N rounds.

Each upload is one whole process, timed from its start to its exit, the same file each time: `sftp` (with the ssh
it runs: RUSAGE_CHILDREN), and a Python process that imports filesync, connects through its sftp target, writes
and publishes (fsync and rename) the file and exits. Both pay their start-up and the connection in every round.
Prints, per round and as median and range: MB/s, the ratio filesync/sftp, CPU seconds per GiB and filesync's peak
memory (max RSS), with the machine's load average (1 minute) when the round started.

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
    """In the child: one upload through SftpTarget (connect, write, publish with its fsync and rename)."""
    from filesync.devices import create_target
    target = create_target("bench", json.loads(options_json))
    size = os.path.getsize(staged)
    target.probe()
    with open(staged, "rb") as stream:
        target.write(name, stream, 0, size, lambda done, note=None: None)
    target.publish(name, size)
    target.close()


def run_child(command, **kwargs):
    """Run `command` from start to exit; (seconds, CPU seconds of it and its children, its own max RSS in KiB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(command, **kwargs)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    returncode = os.waitstatus_to_exitcode(status)
    if returncode:
        raise RuntimeError(f"{command[0]} failed with {returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, usage.ru_maxrss


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
                results = {"load": os.getloadavg()[0]}
                for tool in (("sftp", "filesync") if round_number % 2 else ("filesync", "sftp")):
                    destination = os.path.join(server.storage, f"{tool}.bin")
                    if tool == "sftp":
                        results[tool] = _run_sftp(sftp_command, staged, destination)
                    else:
                        results[tool] = run_child([sys.executable, os.path.abspath(__file__), "--upload-child",
                                                   options, staged, f"{tool}.bin"])
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
    print(f"round {number} (load {results['load']:.2f}): filesync {_rate(size, ours[0]):6.1f} MB/s "
          f"({ours[1] * GIB / size:5.2f} CPU s/GiB, max RSS {ours[2] / 1024:.0f} MiB)   sftp "
          f"{_rate(size, theirs[0]):6.1f} MB/s ({theirs[1] * GIB / size:5.2f} CPU s/GiB)   ratio "
          f"{theirs[0] / ours[0]:.2f}", flush=True)


def _median_range(values, digits):
    values = sorted(values)
    return f"{values[len(values) // 2]:.{digits}f} ({values[0]:.{digits}f}-{values[-1]:.{digits}f})"


def _print_summary(rows, size):
    ours = [row["filesync"] for row in rows]
    theirs = [row["sftp"] for row in rows]
    ratios = [row["sftp"][0] / row["filesync"][0] for row in rows]
    loads = [row["load"] for row in rows]
    print()
    print(f"| {size >> 20} MiB upload, whole processes, {len(rows)} rounds: median (range) | MB/s | CPU s/GiB | "
          "ratio to sftp |")
    print("| --- | --- | --- | --- |")
    print(f"| OpenSSH `sftp -b` (sftp + ssh) | {_median_range((_rate(size, r[0]) for r in theirs), 1)} | "
          f"{_median_range((r[1] * GIB / size for r in theirs), 2)} | 1.00 |")
    print(f"| filesync sftp target (paramiko), Python's start and imports included | "
          f"{_median_range((_rate(size, r[0]) for r in ours), 1)} | "
          f"{_median_range((r[1] * GIB / size for r in ours), 2)} | **{_median_range(ratios, 2)}** |")
    print(f"filesync's peak memory (max RSS): {max(r[2] for r in ours) / 1024:.0f} MiB; load average (1 min) at the "
          f"rounds' starts: {min(loads):.2f}-{max(loads):.2f}")


if __name__ == "__main__":
    main()
