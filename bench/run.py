"""filesync benchmarks against peers, in one run, printed as one table (and saved as JSON).

  ftp     folder -> FTP on loopback (a pyftpdlib server, test/support/ftp_server.py): a large file and many small ones,
          through the real nodes (roslaunch filesync sync.launch) and in-process (LocalRunner), against `curl -T` and
          lftp to the same server in the same run. The pipeline copies each file into staging before uploading it, so
          it is timed end to end and per leg (the legs from the nodes' FileEvent stamps).
  memory  peak RSS (VmHWM) of each node after moving a 10 MiB file and then the large one (same launch as ftp).
  idle    CPU over a minute with nothing to do: `roslaunch filesync sync.launch` as users start it (roslaunch brings up
          its own master and rosout), and the same launch beside a separate roscore (the launch above).
  ledger  100,000 files registered and taken through their states: library Ledger alone, and through the ledger
          node's ROS services with 1, 2 and 4 client processes; then the time from starting the launch with those rows
          in the database to the first byte of a new file in staging.
  mavlink a PX4 log from MAVSDK acting as the autopilot over an emulated 921600-baud serial link, clean and with 5%
          loss each way: our `mavlink` source against pymavlink's mavftp (bench/mavftp_bench.py, whose full run with
          a 20 MB log, a loopback link and MAVROS-style reads is in docs/benchmarks-mavlink.md).
  s3      a 1 GiB upload to SeaweedFS on loopback: our `s3` target against boto3's upload_file (s3transfer), paired
          runs, each in its own process: MB/s, CPU s/GiB of each uploader and of the store, peak RSS
          (bench/s3_bench.py).
  ftps    a 256 MiB upload over explicit TLS to pyftpdlib's TLS_FTPHandler: our `ftp` target (tls: true) against
          `curl --ssl-reqd -T`, paired runs, CPU s/GiB of each.

Run (inside the workspace's environment; `make bench` does that):
  .venv/bin/python bench/run.py [--only ftp,ledger,mavlink,s3,ftps] [--large-mib 1024] [--small 1000] [--rows 100000]
                                [--log-mb 2] [--s3-mib 1024] [--s3-runs 3] [--ftps-mib 256]
"""
import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# With the workspace sourced, filesync comes from its devel space (which adds the generated messages) and src/ must not
# shadow it; without, the library parts still run from src/.
sys.path.insert(0, os.path.join(ROOT, "test"))
try:
    import filesync.msg  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "src"))

import psutil  # noqa: E402

from support.ftp_server import FtpServerProcess  # noqa: E402
from support.launch import Launch, RosMaster, cpu_seconds, peak_rss, quiet_stderr  # noqa: E402
from filesync.devices.base import local_checksum  # noqa: E402

MiB = 1 << 20
SMALL_SIZE = 4096
ROWS = []  # (section, measurement, value, unit, note)


def row(section, what, value, unit="", note=""):
    """Record one figure and print it at once (the table comes again at the end)."""
    ROWS.append((section, what, value, unit, note))
    shown = f"{value:,.3f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)
    print(f"  {section:<7} {what:<58} {shown:>12} {unit:<8} {note}", flush=True)


def write_random(path, size, seed):
    """`size` random bytes in 1 MiB blocks (incompressible, memory stays small)."""
    import random
    generator = random.Random(seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        left = size
        while left:
            block = min(left, MiB)
            handle.write(generator.randbytes(block))
            left -= block


def timed(command, **kwargs):
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=900, **kwargs)
    return time.perf_counter() - started


def mibps(size, seconds):
    return size / MiB / seconds


# Peers ------------------------------------------------------------------------------------------------------------

def curl_upload(server, files, remote_dir, cwd=None):
    """One curl run for all files (curl's {a,b} glob reuses the connection)."""
    url = f"ftp://{server.user}:{server.password}@127.0.0.1:{server.port}/{remote_dir}/"
    names = files[0] if len(files) == 1 else "{" + ",".join(files) + "}"
    return timed(["curl", "-sS", "--ftp-create-dirs", "-T", names, url], cwd=cwd)


def lftp_upload(server, pattern, remote_dir, cwd=None):
    """One lftp session: mkdir, then mput of the files matching `pattern`."""
    script = (f"set cmd:fail-exit yes; set net:max-retries 1; open -u {server.user},{server.password} "
              f"-p {server.port} 127.0.0.1; mkdir -p /{remote_dir}; mput -O /{remote_dir} {pattern}")
    return timed(["lftp", "-c", script], cwd=cwd)


# Through the nodes ----------------------------------------------------------------------------------------------

class EventClock:
    """Stamps of FileEvents per (path, task, task_state): the first stamp each got, from the publishing node."""

    def __init__(self):
        import rospy
        from filesync.msg import FileEvent
        self.stamps = {}
        self.lock = threading.Lock()
        self.subscriber = rospy.Subscriber("/filesync/events", FileEvent, self._on_event, queue_size=5000)

    def _on_event(self, event):
        key = (event.path, event.task, event.task_state)
        with self.lock:
            self.stamps.setdefault(key, event.header.stamp.to_sec())

    def get(self, path, task, state):
        with self.lock:
            return self.stamps.get((path, task, state))

    def wait(self, paths, task="upload", state="done", timeout=900):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.get(p, task, state) is not None for p in paths):
                return max(self.get(p, task, state) for p in paths)
            time.sleep(0.05)
        missing = [p for p in paths if self.get(p, task, state) is None]
        raise TimeoutError(f"{len(missing)} files not {task} {state} after {timeout} s: {missing[:3]}")


def pipeline_config(workdir, server, inbox):
    return {
        "staging_dir": os.path.join(workdir, "staging"), "database": os.path.join(workdir, "db", "ledger.db"),
        "sources": {"inbox": {"kind": "folder", "path": inbox, "min_age": 0.0}},
        "targets": {"ftp": server.target_options("/filesync")},
        "pipelines": [{"source": "inbox", "targets": ["ftp"]}],
        "ftp_server": {"enabled": False},
    }


def scan():
    import rospy
    from std_srvs.srv import Trigger
    rospy.wait_for_service("/filesync/scan", 60)
    rospy.ServiceProxy("/filesync/scan", Trigger)()


def drop(source_paths, inbox, subdirectory):
    """Hard-link the files into a new folder and move it into the inbox at once (they appear complete)."""
    holding = os.path.join(os.path.dirname(inbox), "holding", subdirectory)
    os.makedirs(holding)
    for path in source_paths:
        os.link(path, os.path.join(holding, os.path.basename(path)))
    os.rename(holding, os.path.join(inbox, subdirectory))
    return [f"{subdirectory}/{os.path.basename(p)}" for p in source_paths]


def node_memory(launch):
    return {name: peak_rss(process) for name, process in sorted(launch.node_processes().items())}


def bench_nodes(workdir, master, server, files, curl_once, idle_seconds, rounds=3):
    """Move the files through roslaunch's nodes; memory after each; then the idle minute.

    The large file goes `rounds` times, each right after a curl run of the same file (paired, so that load from
    elsewhere on the machine hits both alike); the ratios are per pair.
    """
    import rospy
    inbox = os.path.join(workdir, "inbox")
    os.makedirs(inbox)
    launch = Launch(workdir, pipeline_config(workdir, server, inbox), name="nodes").start()
    try:
        launch.wait_nodes()
        rospy.init_node("filesync_bench", anonymous=True, disable_signals=True)
        clock = EventClock()
        deadline = time.monotonic() + 60
        while clock.subscriber.get_num_connections() < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        legs = {"total": [], "download": [], "upload": [], "curl": []}
        labels = ["10 MiB"] + [f"large{n}" for n in range(1, rounds + 1)]
        for label in labels:
            paths = [files["medium"] if label == "10 MiB" else files["large"]]
            if label.startswith("large"):
                legs["curl"].append(curl_once())
            relative = drop(paths, inbox, label.replace(" ", ""))
            os.sync()
            started = time.time()
            scan()
            finished = clock.wait(relative)
            if label.startswith("large"):
                path = relative[0]
                arrived = os.path.join(server.root, "filesync", path)
                if local_checksum(arrived, "sha256") != files["large_sha256"]:
                    raise AssertionError("the large file arrived different")
                os.remove(arrived)
                legs["total"].append(finished - started)
                legs["download"].append(clock.get(path, "download", "done") - clock.get(path, "download", "active"))
                legs["upload"].append(clock.get(path, "upload", "done") - clock.get(path, "upload", "active"))
            if label in ("10 MiB", "large1"):
                for name, peak in node_memory(launch).items():
                    row("memory", f"peak RSS {name} after the {label.rstrip('1')} file", round(peak / MiB, 1), "MiB")
        size = os.path.getsize(files["large"])
        row("ftp", f"curl -T: large, paired with the node runs, median of {rounds}",
            mibps(size, median(legs["curl"])), "MiB/s", "runs " + ", ".join(f"{mibps(size, t):.0f}" for t in legs["curl"]))
        for key, what in (("total", "end to end (scan, staging copy, upload)"),
                          ("download", "staging copy leg (fsync per checkpoint)"), ("upload", "upload leg alone")):
            ratios = [c / t for c, t in zip(legs["curl"], legs[key])]
            note = "runs " + ", ".join(f"{mibps(size, t):.0f}" for t in legs[key])
            if key != "download":
                note += f"; {median(ratios):.2f} of curl (pairs: " + ", ".join(f"{r:.2f}" for r in ratios) + ")"
            row("ftp", f"nodes: large, {what}, median of {rounds}", mibps(size, median(legs[key])), "MiB/s", note)
        relative = drop(files["small"], inbox, "small")
        started = time.time()
        scan()
        finished = clock.wait(relative, timeout=1800)
        first_upload = min(clock.get(p, "upload", "active") for p in relative)
        row("ftp", f"nodes: {len(relative)} small files, end to end", (finished - started) / len(relative) * 1000,
            "ms/file", f"{finished - started:.1f} s")
        row("ftp", f"nodes: {len(relative)} small files, first upload to last", (finished - first_upload) /
            len(relative) * 1000, "ms/file", "legs overlap")
        for name, peak in node_memory(launch).items():
            row("memory", f"peak RSS {name} after all", round(peak / MiB, 1), "MiB")
        time.sleep(12)  # let the last announcements and lease releases pass
        processes = {f"node {name}": process for name, process in launch.node_processes().items()}
        processes["roslaunch"] = psutil.Process(launch.process.pid)
        processes.update(ros_processes(master.processes()))
        with_roscore = idle_cpu(processes, idle_seconds)
        clock.subscriber.unregister()
    finally:
        launch.stop()
    # As users start it: roslaunch brings up its own master and rosout. Same database and inbox (1,014 files, all
    # delivered): the finder's first scan finds them known, then nothing is left to do.
    launch = Launch(workdir, pipeline_config(workdir, server, inbox), name="nodes_own_master", own_master=True).start()
    try:
        launch.wait_nodes()
        time.sleep(20)  # start-up and the first scan
        processes = {f"node {name}": process for name, process in launch.node_processes().items()}
        root = psutil.Process(launch.process.pid)
        processes["roslaunch"] = root
        processes.update(ros_processes([p for p in root.children() if p.pid not in
                                        {n.pid for n in launch.node_processes().values()}]))
        own_master = idle_cpu(processes, idle_seconds)
    finally:
        launch.stop()
    for (used, woke), what in ((own_master, "roslaunch filesync sync.launch (own master)"),
                               (with_roscore, "the launch + a separate roscore")):
        nodes = [name for name in used if name.startswith("node ")]
        ros = [name for name in used if name not in nodes]
        row("idle", f"CPU of {what}, {len(used)} processes, {idle_seconds} s idle", sum(used.values()), "% core",
            f"{sum(woke.values()):.0f} wakeups/s")
        row("idle", f"  of which the {len(nodes)} filesync nodes", sum(used[n] for n in nodes), "% core",
            f"{sum(woke[n] for n in nodes):.0f} wakeups/s")
        row("idle", "  of which ROS's own processes", sum(used[n] for n in ros), "% core",
            f"{sum(woke[n] for n in ros):.0f} wakeups/s")
        for name in sorted(used):
            row("idle", f"  {name}", used[name], "% core", f"{woke[name]:.1f} wakeups/s")


def ros_processes(processes):
    """{rosmaster|rosout|roscore: process} of ROS's own processes, named from their command lines."""
    named = {}
    for process in processes:
        try:
            command = " ".join(process.cmdline())
        except psutil.Error:
            continue
        named["rosmaster" if "rosmaster" in command else "rosout" if "rosout" in command else "roscore"] = process
    return named


def idle_cpu(processes, seconds):
    """({name: % of one core}, {name: wakeups/s}) of each process over `seconds`.

    CPU is user + system time from /proc; wakeups are the voluntary context switches of its threads (each sleep that
    ended). Wakeups do not depend on how busy the machine is; the CPU each costs does.
    """
    before = {name: (cpu_seconds([p]), wakeups(p)) for name, p in processes.items()}
    wall = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - wall
    used = {name: (cpu_seconds([p]) - before[name][0]) / wall * 100 for name, p in processes.items()}
    woke = {name: (wakeups(p) - before[name][1]) / wall for name, p in processes.items()}
    return used, woke


def wakeups(process):
    """Voluntary context switches summed over the process's threads now (threads that ended are not counted)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{process.pid}/task")
    except OSError:
        return 0
    for task in tasks:
        try:
            with open(f"/proc/{process.pid}/task/{task}/status", encoding="ascii") as status:
                total += sum(int(line.split()[1]) for line in status if line.startswith("voluntary_ctxt_switches"))
        except OSError:
            pass
    return total


def bench_local(workdir, server, files, curl_once):
    """The same pipeline in one process without ROS (LocalRunner); the legs from announcement times."""
    from filesync.engine.runner import LocalRunner
    inbox = os.path.join(workdir, "local_inbox")
    os.makedirs(inbox)
    config = pipeline_config(os.path.join(workdir, "local"), server, inbox)
    config["targets"]["ftp"]["root"] = "/local"
    stamps = {}

    for label, paths in (("large", [files["large"]]), ("small", files["small"])):
        curl_large = curl_once() if label == "large" else None
        relative = drop(paths, inbox, label)
        os.sync()
        runner = LocalRunner(config)
        for loop in runner.loops:
            original = loop.announce

            def announce(record, task=None, done=None, original=original):
                if task is not None:
                    stamps.setdefault((record.path, task.kind, task.state), time.time())
                original(record, task, done)
            loop.announce = announce
        try:
            started = time.time()
            runner.run_until_settled(timeout=1800)
            settled = time.time()
        finally:
            runner.close()
        if label == "large":
            path, size = relative[0], os.path.getsize(paths[0])
            total = stamps[(path, "upload", "done")] - started
            upload = stamps[(path, "upload", "done")] - stamps[(path, "upload", "active")]
            download = stamps[(path, "download", "done")] - stamps[(path, "download", "active")]
            row("ftp", "LocalRunner: large, end to end", mibps(size, total), "MiB/s",
                f"{total:.2f} s; {curl_large / total:.2f} of the curl run just before ({mibps(size, curl_large):.0f})")
            row("ftp", "LocalRunner: large, staging copy leg", mibps(size, download), "MiB/s", f"{download:.2f} s")
            row("ftp", "LocalRunner: large, upload leg alone", mibps(size, upload), "MiB/s",
                f"{upload:.2f} s; {curl_large / upload:.2f} of that curl run")
        else:
            total = max(stamps[(p, "upload", "done")] for p in relative) - started
            row("ftp", f"LocalRunner: {len(relative)} small files, end to end", total / len(relative) * 1000,
                "ms/file", f"{total:.1f} s (settled after {settled - started:.1f} s)")


def mount_tmpfs(path, size):
    """A tmpfs at `path` (so the server's writes never wait on the disk's writeback); False if it cannot be had."""
    os.makedirs(path, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "filesync-bench", path],
                          capture_output=True).returncode == 0


def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def bench_ftp(args, workdir, master):
    ftp_root = os.path.join(workdir, "ftp_root")
    on_tmpfs = mount_tmpfs(ftp_root, args.large_mib * 3 * MiB + 512 * MiB)
    print(f"FTP root on {'tmpfs' if on_tmpfs else 'disk (no tmpfs: figures depend on writeback)'}; staging on disk")
    server = FtpServerProcess(ftp_root, os.path.join(workdir, "ftp.log"))
    with quiet_stderr(os.path.join(workdir, "ftp_server.log")):
        server.start()
    try:
        source = os.path.join(workdir, "source")
        files = {"large": os.path.join(source, "large.bin"), "medium": os.path.join(source, "medium.bin")}
        size = args.large_mib * MiB
        write_random(files["large"], size, 1)
        write_random(files["medium"], 10 * MiB, 2)
        files["large_sha256"] = local_checksum(files["large"], "sha256")
        files["small"] = []
        for index in range(args.small):
            path = os.path.join(source, "small", f"s{index:05d}.bin")
            write_random(path, SMALL_SIZE, 100 + index)
            files["small"].append(path)

        def curl_once():
            os.sync()
            seconds = curl_upload(server, [files["large"]], "curl")
            os.remove(os.path.join(server.root, "curl", "large.bin"))
            curl_runs.append(seconds)
            return seconds

        curl_runs = []
        curl_once()
        os.sync()
        lftp_large = lftp_upload(server, files["large"], "lftp")
        os.remove(os.path.join(server.root, "lftp", "large.bin"))
        curl_once()
        row("ftp", f"curl -T: {args.large_mib} MiB file, alone", mibps(size, median(curl_runs)), "MiB/s",
            "runs " + ", ".join(f"{mibps(size, t):.0f}" for t in curl_runs))
        row("ftp", f"lftp put: {args.large_mib} MiB file, between those", mibps(size, lftp_large), "MiB/s",
            f"{lftp_large:.2f} s; {median(curl_runs) / lftp_large:.2f} of curl")
        small_dir = os.path.join(source, "small")
        names = [os.path.basename(p) for p in files["small"]]
        seconds = curl_upload(server, names, "curl_small", cwd=small_dir)
        row("ftp", f"curl -T: {args.small} x {SMALL_SIZE} B files, one connection", seconds / args.small * 1000,
            "ms/file", f"{seconds:.1f} s")
        seconds = lftp_upload(server, "*.bin", "lftp_small", cwd=small_dir)
        row("ftp", f"lftp mput: {args.small} x {SMALL_SIZE} B files", seconds / args.small * 1000, "ms/file",
            f"{seconds:.1f} s")
        if "nodes" not in args.skip:
            bench_nodes(workdir, master, server, files, curl_once, args.idle_seconds)
        if "local" not in args.skip:
            bench_local(workdir, server, files, curl_once)
    finally:
        server.stop()
        if on_tmpfs:
            subprocess.run(["umount", "-l", ftp_root], capture_output=True)


# The ledger at scale ----------------------------------------------------------------------------------------------

def register_rows(ledger, rows, batch=500):
    """Register `rows` files (paths that exist nowhere) in batches as the finder does; return seconds."""
    started = time.perf_counter()
    for start in range(0, rows, batch):
        ledger.register("inbox", ["ftp"], False, [(f"old/f{i:06d}", 1000, 1.0)
                                                   for i in range(start, min(rows, start + batch))])
    return time.perf_counter() - started


def take_through(ledger, worker, seconds):
    """Claim and finish downloads and uploads (with one checkpoint each) for `seconds`; return (transitions, calls)."""
    transitions = calls = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for kind, device in (("download", "inbox"), ("upload", "ftp")):
            claimed = ledger.claim(kind, device, f"{worker}/{kind}", 30)
            if claimed is None:
                return transitions, calls + 1
            record, _ = claimed
            ledger.checkpoint(record.id, kind, device, f"{worker}/{kind}", 1000, 30)
            ledger.finish(record.id, kind, device, f"{worker}/{kind}", "done")
            transitions += 2
            calls += 3
    return transitions, calls


def service_client(worker, seconds, start_at):
    """One client process of the services benchmark (bench/run.py --service-client): prints its counts as JSON."""
    import rospy
    from filesync.ros.ledger_client import RosLedger
    rospy.init_node(f"bench_client_{worker}", anonymous=True, disable_signals=True)
    ledger = RosLedger(wait=60)
    ledger.files(limit=1)  # connect before the clock starts
    time.sleep(max(0.0, start_at - time.time()))
    started = time.perf_counter()
    transitions, calls = take_through(ledger, worker, seconds)
    print(json.dumps([transitions, calls, time.perf_counter() - started]), flush=True)


def bench_ledger(args, workdir, master):
    from filesync.ledger.store import Ledger
    from rostest_nodes import Stack
    rows = args.rows
    library = Ledger(os.path.join(workdir, "library", "ledger.db"))
    seconds = register_rows(library, rows)
    row("ledger", f"library: register {rows:,} files (batches of 500)", rows / seconds, "files/s", f"{seconds:.1f} s")
    transitions, calls = take_through(library, "lib", args.ledger_seconds)
    row("ledger", f"library: claim/finish with {rows:,} rows (1 thread)", transitions / args.ledger_seconds,
        "trans/s", f"{calls / args.ledger_seconds:,.0f} calls/s incl. checkpoints")
    library.close()

    database = os.path.join(workdir, "services", "db", "ledger.db")
    import rospy
    rospy.set_param("/filesync/config", {
        "staging_dir": os.path.join(workdir, "services", "staging"), "database": database,
        "sources": {"inbox": {"kind": "folder", "path": os.path.join(workdir, "services", "inbox"), "min_age": 0.0}},
        "targets": {"ftp": {"kind": "ftp", "host": "127.0.0.1", "port": 1, "password": "x"}},
        "pipelines": [{"source": "inbox", "targets": ["ftp"]}]})
    stack = Stack(os.path.join(workdir, "services"))
    os.makedirs(stack.workdir, exist_ok=True)
    stack.start("ledger")
    try:
        from filesync.ros.ledger_client import RosLedger
        if not rospy.core.is_initialized():
            rospy.init_node("filesync_bench", anonymous=True, disable_signals=True)
        client = RosLedger(wait=60)
        client.files(limit=1)
        seconds = register_rows(client, rows)
        row("ledger", f"services: register {rows:,} files (batches of 500)", rows / seconds, "files/s",
            f"{seconds:.1f} s")
        for clients in (1, 2, 4):
            start_at = time.time() + 8  # every client connected before any starts
            workers = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--service-client",
                                         f"c{clients}{n},{args.ledger_seconds},{start_at}"], stdout=subprocess.PIPE,
                                        text=True) for n in range(clients)]
            outcomes = [json.loads(worker.communicate(timeout=args.ledger_seconds + 120)[0].strip().splitlines()[-1])
                        for worker in workers]
            transitions = sum(o[0] for o in outcomes)
            calls = sum(o[1] for o in outcomes)
            span = max(o[2] for o in outcomes)
            row("ledger", f"services: claim/finish with {rows:,} rows, {clients} client process(es)",
                transitions / span, "trans/s", f"{calls / span:,.0f} calls/s incl. checkpoints")
    finally:
        stack.stop_all()
    first_byte(args, workdir, database)


def first_byte(args, workdir, database):
    """Start the launch over the 100,000-row database (every row delivered) with one new file in the inbox."""
    with sqlite3.connect(database) as db:  # what a long life leaves behind: every known file done
        db.execute("UPDATE tasks SET state = 'done', owner = '', lease_until = 0")
        db.execute("UPDATE files SET state = 'uploaded'")
        count = db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
    base = os.path.join(workdir, "services")
    server = FtpServerProcess(os.path.join(base, "ftp_root"), os.path.join(base, "ftp.log"))
    with quiet_stderr(os.path.join(base, "ftp_server.log")):
        server.start()
    try:
        inbox = os.path.join(base, "inbox")
        write_random(os.path.join(inbox, "new.bin"), 4 * MiB, 3)
        config = pipeline_config(base, server, inbox)
        config["database"] = database
        staged = os.path.join(base, "staging", "inbox", str(count + 1))  # staging is keyed by the version's id
        launch = Launch(base, config, name="first_byte").start()
        try:
            started = launch.started_at
            first = None
            deadline = time.monotonic() + 120
            while first is None and time.monotonic() < deadline:
                for candidate in (staged + ".part", staged):
                    try:
                        if os.path.getsize(candidate) > 0:
                            first = time.time()
                            break
                    except OSError:
                        pass
                time.sleep(0.005)
            if first is None:
                raise TimeoutError("no byte reached staging within 120 s")
            row("ledger", f"launch start to first byte in staging, {count:,} rows", first - started, "s")
        finally:
            launch.stop()
    finally:
        server.stop()


def machine():
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "load_before": os.getloadavg()}


def bench_mavlink(args, workdir, master):
    """Our `mavlink` source against pymavlink's mavftp on one log, over the serial link clean and lossy."""
    from mavftp_bench import LINK_LIMIT, measure
    size = int(args.log_mb * 1_000_000)
    with open(os.devnull, "w") as quiet:
        rows = measure(size, ["serial", "serial5"], ["ours", "pymavlink"], log=quiet)
    rates = {(link, reader): (rate, correct) for link, reader, _, _, rate, correct in rows}
    for link, what in (("serial", "921600 baud"), ("serial5", "921600 baud, 5% loss each way")):
        ours, ours_ok = rates[(link, "ours")]
        peer, peer_ok = rates[(link, "pymavlink")]
        identical = "identical" if ours_ok is True and peer_ok is True else f"identical: ours {ours_ok}, peer {peer_ok}"
        row("mavlink", f"{args.log_mb:g} MB log, {what}: ours", ours, "KB/s",
            f"{ours * 1000 / LINK_LIMIT:.2f} of the link's {LINK_LIMIT / 1000:.1f} KB/s; {identical}")
        row("mavlink", "  pymavlink mavftp (burst 239), same link", peer, "KB/s",
            f"ours / pymavlink = {ours / peer:.2f}" if peer else "pymavlink failed")


def bench_s3(args, workdir, master):
    """Our s3 target against boto3's upload_file, paired runs on one SeaweedFS (bench/s3_bench.py)."""
    from s3_bench import measure
    size = args.s3_mib * MiB
    results = measure(os.path.join(workdir, "s3"), size, args.s3_runs, (args.s3_concurrency,), log=sys.stdout)
    ours, peer = results[f"ours, max_concurrency {args.s3_concurrency}"], results["upload_file"]
    gib = size / (1 << 30)
    ratios = [p["seconds"] / o["seconds"] for o, p in zip(ours, peer)]
    identical = all(r["identical"] for r in ours + peer)
    for name, runs in (("ours (s3 target)", ours), ("boto3 upload_file (10 threads)", peer)):
        rates = [size / r["seconds"] / MiB for r in runs]
        note = "runs " + ", ".join(f"{rate:.0f}" for rate in rates)
        if runs is ours:
            note += f"; {median(ratios):.2f} of upload_file (pairs: " + ", ".join(f"{r:.2f}" for r in ratios) + ")"
        row("s3", f"{args.s3_mib} MiB upload, {name}, median of {len(runs)}", median(rates), "MiB/s", note)
        row("s3", "  CPU of that process per GiB, median", median([r["cpu"] for r in runs]) / gib, "s/GiB",
            f"weed's CPU {median([r['weed_cpu'] for r in runs]) / gib:.2f} s/GiB")
        row("s3", "  peak RSS of that process", round(max(r["peak_rss"] for r in runs) / MiB, 1), "MiB",
            "bytes identical" if identical else "BYTES DIFFER")
    small = results["ours small"][0]
    row("s3", "  ours, peak RSS with a 64 MiB file (flat in file size)", round(small["peak_rss"] / MiB, 1), "MiB")


def bench_ftps(args, workdir, master):
    """Our ftp target over TLS against curl --ssl-reqd, paired runs, to pyftpdlib's TLS_FTPHandler."""
    import resource
    from filesync.devices import create_target
    from support.ftp_servers import PyftpdlibTls
    size = args.ftps_mib * MiB
    local = os.path.join(workdir, "ftps", "upload.bin")
    write_random(local, size, 7)
    server = PyftpdlibTls(os.path.join(workdir, "ftps", "server")).start()

    def cpu(who):
        usage = resource.getrusage(who)
        return usage.ru_utime + usage.ru_stime
    runs = {"ours": [], "curl": []}
    try:
        for run in range(args.ftps_runs):
            before, started = cpu(resource.RUSAGE_CHILDREN), time.perf_counter()
            timed(["curl", "-sS", "--ssl-reqd", "--cacert", server.ca_file, "-T", local,
                   f"ftp://{server.user}:{server.password}@127.0.0.1:{server.port}/curl{run}.bin"])
            runs["curl"].append((time.perf_counter() - started, cpu(resource.RUSAGE_CHILDREN) - before))
            target = create_target("bench", server.options())
            target.probe()
            before, started = cpu(resource.RUSAGE_SELF), time.perf_counter()
            with open(local, "rb") as stream:
                target.write(f"ours{run}.bin", stream, 0, size, lambda done, note=None: None)
            target.publish(f"ours{run}.bin", size)
            runs["ours"].append((time.perf_counter() - started, cpu(resource.RUSAGE_SELF) - before))
            target.close()
            for name in (f"curl{run}.bin", f"ours{run}.bin"):
                if os.path.getsize(os.path.join(server.storage, name)) != size:
                    raise AssertionError(f"{name} arrived with another size")
                os.remove(os.path.join(server.storage, name))
    finally:
        server.stop()
        os.remove(local)
    gib = size / (1 << 30)
    ratios = [c[0] / o[0] for o, c in zip(runs["ours"], runs["curl"])]
    for name, label in (("ours", "ours (ftp target, tls: true)"), ("curl", "curl --ssl-reqd -T")):
        rates = [size / seconds / MiB for seconds, _ in runs[name]]
        note = "runs " + ", ".join(f"{rate:.0f}" for rate in rates)
        if name == "ours":
            note += f"; {median(ratios):.2f} of curl (pairs: " + ", ".join(f"{r:.2f}" for r in ratios) + ")"
        row("ftps", f"{args.ftps_mib} MiB upload over TLS, {label}, median of {len(rates)}", median(rates), "MiB/s",
            note)
        row("ftps", "  client CPU per GiB, median", median([c for _, c in runs[name]]) / gib, "s/GiB")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="ftp,ledger,mavlink,s3,ftps",
                        help="comma-separated: ftp (with memory and idle), ledger, mavlink, s3, ftps")
    parser.add_argument("--skip", default="", help="comma-separated parts of ftp to skip: nodes, local")
    parser.add_argument("--large-mib", type=int, default=1024)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--ledger-seconds", type=float, default=15.0)
    parser.add_argument("--log-mb", type=float, default=2.0, help="size of the PX4 log for the mavlink part")
    parser.add_argument("--idle-seconds", type=int, default=60)
    parser.add_argument("--s3-mib", type=int, default=1024, help="size of the S3 upload")
    parser.add_argument("--s3-runs", type=int, default=3, help="paired S3 runs (ours, upload_file)")
    parser.add_argument("--s3-concurrency", type=int, default=4, help="our s3 target's max_concurrency")
    parser.add_argument("--ftps-mib", type=int, default=256, help="size of the FTPS upload")
    parser.add_argument("--ftps-runs", type=int, default=2, help="paired FTPS runs (curl, ours)")
    parser.add_argument("--workdir", default="", help="default: a new folder under /var/tmp (removed at the end)")
    parser.add_argument("--service-client", default="", help=argparse.SUPPRESS)
    parser.add_argument("--json", default=os.path.join(ROOT, "build", "bench", "results.json"))
    args = parser.parse_args()
    if args.service_client:
        worker, seconds, start_at = args.service_client.split(",")
        return service_client(worker, float(seconds), float(start_at))
    workdir = args.workdir or tempfile.mkdtemp(prefix="filesync-bench-", dir="/var/tmp")
    info = machine()
    print(f"filesync bench on {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB; workdir {workdir}")
    master = RosMaster(workdir).start()
    started = time.monotonic()
    try:
        for part in args.only.split(","):
            {"ftp": bench_ftp, "ledger": bench_ledger, "mavlink": bench_mavlink, "s3": bench_s3,
             "ftps": bench_ftps}[part](args, workdir, master)
    finally:
        master.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{'section':<8}{'measurement':<66}{'value':>12} {'unit':<8} note")
    for section, what, value, unit, note in ROWS:
        shown = f"{value:,.3f}" if isinstance(value, float) else f"{value:,}"
        print(f"{section:<8}{what:<66}{shown:>12} {unit:<8} {note}")
    print(f"total {time.monotonic() - started:.0f} s")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump({"machine": info, "args": vars(args), "rows": ROWS}, handle, indent=1)


if __name__ == "__main__":
    main()
