"""Memory of every node with many files registered (issue 18, goal 7): flat in the number of files?

Starts the real `roslaunch filesync sync.launch` (folder source -> FTP target) with staging on a 16 MiB tmpfs and its
free-space floor above that, so downloads wait and the files stay registered, not moved. Reads each node's resident set (VmRSS)
and peak (VmHWM) from /proc: idle with an empty inbox, then after --files empty files appeared in the inbox and the
finder registered them all (three scans after the ledger counts them all). Prints one table; the goal is every node
within 1.2x of its idle resident set.

Run in the catkin workspace's environment (`make bench-many` runs it):
  .venv/bin/python bench/registered_memory.py [--files 100000] [--settle 30]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "test"))


def memory(process):
    """(VmRSS, VmHWM) in MiB of a running process."""
    values = {}
    with open(f"/proc/{process.pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values["VmRSS"], values["VmHWM"]


def make_inbox(inbox, files, per_folder=1000):
    """`files` empty files in folders of `per_folder`, made aside and moved in whole."""
    holding = inbox + ".holding"
    for index in range(files):
        folder = os.path.join(holding, f"d{index // per_folder:04d}")
        if index % per_folder == 0:
            os.makedirs(folder)
        open(os.path.join(folder, f"f{index:06d}.jpg"), "wb").close()
    os.rename(holding, inbox)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--settle", type=float, default=30.0, help="seconds idle before the first reading")
    args = parser.parse_args()
    import rospy
    from filesync.msg import Status
    from run import mount_tmpfs, scan
    from support.launch import Launch, RosMaster, free_port
    workdir = tempfile.mkdtemp(prefix="filesync-registered-", dir="/var/tmp")
    inbox = os.path.join(workdir, "inbox")
    config = {"staging_dir": os.path.join(workdir, "staging"), "database": os.path.join(workdir, "db", "ledger.db"),
              "staging_min_free_bytes": 64 * 2 ** 20,  # above the tmpfs: downloads wait, the files stay registered
              "sources": {"inbox": {"kind": "folder", "path": inbox}},  # min_age as users get it: 2 s
              "targets": {"ftp": {"kind": "ftp", "host": "127.0.0.1", "port": free_port(), "user": "nobody",
                                  "password": "unused", "root": "/"}},
              "pipelines": [{"source": "inbox", "targets": ["ftp"]}], "ftp_server": {"enabled": False}}
    os.makedirs(inbox + ".empty")
    os.rename(inbox + ".empty", inbox)
    if not mount_tmpfs(config["staging_dir"], 16 * 2 ** 20):
        raise SystemExit("a tmpfs for staging could not be mounted (this bench runs as root)")
    master = RosMaster(workdir).start()
    launch = Launch(workdir, config, name="registered").start()
    try:
        launch.wait_nodes()
        rospy.init_node("filesync_bench_registered", anonymous=True, disable_signals=True)
        statuses = []
        rospy.Subscriber("/filesync/status", Status, statuses.append, queue_size=1)
        time.sleep(args.settle)
        idle = {name: memory(process) for name, process in launch.node_processes().items()}
        started = time.monotonic()
        os.rmdir(inbox)
        make_inbox(inbox, args.files)
        scan()
        found = 0
        while time.monotonic() - started < 1800:
            if statuses:
                found = sum(p.found + p.downloading + p.downloaded for p in statuses[-1].pipelines)
                if found >= args.files:
                    break
            time.sleep(1)
        registered_after = time.monotonic() - started
        for _ in range(3):  # three more listings of the whole inbox, as the finder makes every scan_interval
            scan()
            time.sleep(5)
        after = {name: memory(process) for name, process in launch.node_processes().items()}
    finally:
        launch.stop()
        master.stop()
        subprocess.run(["umount", "-l", config["staging_dir"]], capture_output=True)
    print(f"{args.files} files registered ({found} counted by the status) in {registered_after:.0f} s; "
          f"load {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{'node':<24} {'idle RSS':>9} {'RSS after':>10} {'ratio':>6} {'peak after':>11}")
    for name in sorted(after):
        ratio = after[name][0] / idle[name][0]
        print(f"{name:<24} {idle[name][0]:8.1f}M {after[name][0]:9.1f}M {ratio:6.2f} {after[name][1]:10.1f}M"
              f"{'' if ratio <= 1.2 else '  above 1.2x'}")


if __name__ == "__main__":
    main()
