"""The soak: files flow folder -> FTP through `roslaunch filesync sync.launch` while faults are injected at random.

Faults: kill -9 of any node of the launch (roslaunch respawns it), restarts of the FTP server (a real pyftpdlib in a
subprocess, test/support/ftp_server.py, which logs every STOR's offset and bytes), and a staging disk (a small tmpfs)
that fills up and frees again. Two pipelines: `keep` to one FTP target, and `del` to two targets with
delete_after_upload, so a source file may go only after both targets hold it.

At the end it checks and prints: every file byte-identical on every target; each published (RNTO) at most once, none
missing; no source file deleted before every target held it verified; bytes sent again within one checkpoint
interval per interruption; nothing parked or left waiting, with no person involved. The plan (file sizes and fault
times) comes from the seed, printed first and on failure; replaying a seed repeats the plan (process timing differs).

  make soak                                                 # 20 minutes, a new seed
  make soak SOAK_SEED=1234                                  # replay a seed
  .venv/bin/python test/support/soak.py --minutes 3 --seed 1234   # shorter (workspace environment sourced)
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # test/, for `support`

from filesync.devices.base import local_checksum  # noqa: E402
from support.ftp_server import FtpServerProcess  # noqa: E402
from support.launch import Launch, RosMaster, launch_nodes, quiet_stderr  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20
CHECKPOINT = 256 * KiB
KILL_WEIGHTS = {"ledger": 3, "downloader": 3, "uploader": 3, "finder": 2}  # other nodes of the launch weigh 1
TARGETS = {"keep": ["keep_ftp"], "del": ["del_ftp1", "del_ftp2"]}
ROOTS = {"keep_ftp": "/keep", "del_ftp1": "/del1", "del_ftp2": "/del2"}


@dataclass
class Plan:
    """What happens when, drawn from the seed: (time, file) drops and (time, fault) injections."""
    seed: int
    inject_seconds: float
    drops: list = field(default_factory=list)  # (at, pipeline, name, size)
    faults: list = field(default_factory=list)  # (at, kind, argument)

    @classmethod
    def draw(cls, seed, inject_seconds, kills, restarts, fills, files_per_second, nodes):
        rng = random.Random(seed)
        plan = cls(seed, inject_seconds)
        at, index = 0.0, 0
        while at < inject_seconds * 0.9:  # the last files still meet faults
            at += rng.expovariate(files_per_second)
            roll = rng.random()
            size = (rng.choice([0, 1, rng.randrange(2, 64 * KiB)]) if roll < 0.15 else
                    rng.randrange(64 * KiB, 1 * MiB) if roll < 0.75 else rng.randrange(1 * MiB, 6 * MiB))
            pipeline = "del" if rng.random() < 0.4 else "keep"
            plan.drops.append((at, pipeline, f"d{index % 4}/f{index:05d}.bin", size))
            index += 1
        weights = [KILL_WEIGHTS.get(node, 1) for node in nodes]
        for _ in range(kills):
            plan.faults.append((rng.uniform(2, inject_seconds), "kill", rng.choices(nodes, weights)[0]))
        for _ in range(restarts):
            plan.faults.append((rng.uniform(2, inject_seconds), "ftp_restart", rng.uniform(0.3, 3.0)))
        for _ in range(fills):
            plan.faults.append((rng.uniform(2, inject_seconds * 0.9), "fill", rng.uniform(2.0, 8.0)))
        plan.faults.sort()
        return plan

    def staging_bytes(self):
        return sum(size for _, _, _, size in self.drops)


class Soak:
    """One soak run in `workdir` (must exist); run() returns a dict of figures and a list of failures."""

    def __init__(self, workdir, plan, settle_seconds=180.0, log=print):
        self.workdir, self.plan, self.settle_seconds, self.log = workdir, plan, settle_seconds, log
        self.expected = {}  # (pipeline, name) -> (size, sha256)
        self.deleted_early = []
        self.counts = Counter()
        self.failures = []
        self.stop_event = threading.Event()
        self.staging = os.path.join(workdir, "staging")
        self.inboxes = {p: os.path.join(workdir, "inbox_" + p) for p in TARGETS}
        self.server = FtpServerProcess(os.path.join(workdir, "ftp_root"), os.path.join(workdir, "ftp.log"))
        self.database = os.path.join(workdir, "db", "ledger.db")
        self.tmpfs = False

    def config(self):
        targets = {name: dict(self.server.target_options(root), timeout=10.0) for name, root in ROOTS.items()}
        return {
            "staging_dir": self.staging, "database": self.database, "checkpoint_bytes": CHECKPOINT,
            "scan_interval": 1.0, "poll_interval": 2.0, "lease_seconds": 5.0, "retry_base": 0.2, "retry_cap": 3.0,
            "bwlimit": 3 * MiB, "max_attempts": 5,
            "sources": {p: {"kind": "folder", "path": path, "min_age": 0.0} for p, path in self.inboxes.items()},
            "targets": targets,
            "pipelines": [{"source": p, "targets": TARGETS[p], "delete_after_upload": p == "del"} for p in TARGETS],
            "ftp_server": {"enabled": False},
        }

    # Setup and teardown -------------------------------------------------------------------------------------------

    def _mount_staging(self):
        os.makedirs(self.staging, exist_ok=True)
        size = self.plan.staging_bytes() * 1.2 + 64 * MiB
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size)}", "filesync-soak", self.staging],
                                capture_output=True, text=True)
        self.tmpfs = result.returncode == 0
        if not self.tmpfs:
            self.log(f"soak: no tmpfs for staging ({result.stderr.strip()}); staging fills are skipped")

    def _unmount_staging(self):
        if self.tmpfs:
            subprocess.run(["umount", "-l", self.staging], capture_output=True)
            self.tmpfs = False

    # The threads --------------------------------------------------------------------------------------------------

    def _drop_files(self, started):
        rng = random.Random(self.plan.seed + 1)
        for at, pipeline, name, size in self.plan.drops:
            if self.stop_event.wait(max(0.0, started + at - time.monotonic())):
                return
            final = os.path.join(self.inboxes[pipeline], name)
            temporary = os.path.join(os.path.dirname(final), ".tmp-" + os.path.basename(final))
            os.makedirs(os.path.dirname(final), exist_ok=True)
            data = rng.randbytes(size)
            with open(temporary, "wb") as handle:
                handle.write(data)
            os.rename(temporary, final)
            self.expected[(pipeline, name)] = (size, hashlib.sha256(data).hexdigest())  # after: the watcher looks
            self.counts["files"] += 1
            self.counts["bytes"] += size

    def _watch_deletions(self):
        """A source file of `del` may vanish only once both targets hold it whole: look the moment it is gone."""
        checked = set()
        while not self.stop_event.wait(0.05):
            for (pipeline, name), (size, digest) in list(self.expected.items()):
                if pipeline != "del" or name in checked or os.path.exists(os.path.join(self.inboxes["del"], name)):
                    continue
                checked.add(name)
                for target in TARGETS["del"]:
                    held = os.path.join(self.server.root, ROOTS[target].lstrip("/"), name)
                    if not os.path.exists(held) or os.path.getsize(held) != size or local_checksum(held, "sha256") != digest:
                        self.deleted_early.append((name, target))
        self.counts["deletions_seen"] = len(checked)

    def _inject(self, launch, started):
        for at, kind, argument in self.plan.faults:
            if self.stop_event.wait(max(0.0, started + at - time.monotonic())):
                return
            if kind == "kill":
                deadline = time.monotonic() + 10  # a node still respawning is waited for, then killed
                while not launch.kill_node(argument) and time.monotonic() < deadline:
                    time.sleep(0.2)
                self.counts[f"kill {argument}"] += 1
                self.counts["kills"] += 1
            elif kind == "ftp_restart":
                self.server.stop()
                time.sleep(argument)
                with quiet_stderr(os.path.join(self.workdir, "ftp_server.log")):
                    self.server.start()
                self.counts["ftp_restarts"] += 1
            elif kind == "fill" and self.tmpfs:
                filler = os.path.join(self.staging, ".filler")
                stats = os.statvfs(self.staging)
                try:
                    with open(filler, "wb") as handle:
                        os.posix_fallocate(handle.fileno(), 0, stats.f_bavail * stats.f_frsize)
                except OSError:
                    pass  # filled as far as it goes
                time.sleep(argument)
                os.remove(filler)
                self.counts["staging_fills"] += 1

    # The run ------------------------------------------------------------------------------------------------------

    def _ledger_rows(self):
        try:
            with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=5) as db:
                files = db.execute("SELECT source, path, state, error FROM files").fetchall()
                busy = db.execute("SELECT COUNT(*) FROM tasks WHERE state IN ('waiting', 'active')").fetchone()[0]
            return files, busy
        except sqlite3.Error:
            return None, None

    def _settled(self):
        files, busy = self._ledger_rows()
        if files is None:
            return False, "ledger not readable"
        states = Counter(state for _, _, state, _ in files)
        failed = [(s, p, e) for s, p, state, e in files if state in ("failed", "skipped")]
        if failed:
            return True, f"failed: {failed[:5]}"
        done = len(files) == len(self.expected) and busy == 0 and set(states) <= {"uploaded", "removed"}
        return done, dict(states)

    def run(self):
        """Run the plan; returns (figures, failures)."""
        for path in self.inboxes.values():
            os.makedirs(path, exist_ok=True)
        self._mount_staging()
        master = launch = None
        threads = []
        try:
            with quiet_stderr(os.path.join(self.workdir, "ftp_server.log")):
                self.server.start()
            master = RosMaster(self.workdir).start()
            launch = Launch(self.workdir, self.config(), respawn_delay=0.5, name="soak").start()
            launch.wait_nodes(timeout=120)
            started = time.monotonic()
            threads = [threading.Thread(target=target, args=args, daemon=True) for target, args in
                       ((self._drop_files, (started,)), (self._watch_deletions, ()), (self._inject, (launch, started)))]
            for thread in threads:
                thread.start()
            threads[0].join(self.plan.inject_seconds + 60)
            threads[2].join(max(0.0, started + self.plan.inject_seconds - time.monotonic()) + 60)
            if self.server.process is None:  # a restart was cut short
                self.server.start()
            inject_end = time.monotonic()
            deadline = inject_end + self.settle_seconds
            settled, detail = False, ""
            while time.monotonic() < deadline:
                settled, detail = self._settled()
                if settled:
                    break
                time.sleep(1.0)
            self.counts["settle_seconds"] = round(time.monotonic() - inject_end, 1)
            if not settled or str(detail).startswith("failed"):
                self.failures.append(f"not settled {self.settle_seconds:.0f} s after the faults stopped "
                                     f"(no person steps in): {detail}")
            time.sleep(1.0)  # let the deletion watcher see the last removals
        finally:
            self.stop_event.set()
            for thread in threads:
                thread.join(30)
            if launch:
                launch.stop()
            if master:
                master.stop()
            self.server.stop()
            self._unmount_staging()
        self._check()
        return dict(self.counts), self.failures

    # The checks ---------------------------------------------------------------------------------------------------

    def _check(self):
        events = self.server.events()
        publications = Counter(e["path"] for e in events if e["op"] == "RNTO")
        stors = defaultdict(list)
        for event in events:
            if event["op"] == "STOR":
                stors[event["path"]].append(event)
        wrong, missing, twice, unpublished = [], [], [], []
        resent, sizes_sum = 0, 0
        for (pipeline, name), (size, digest) in sorted(self.expected.items()):
            for target in TARGETS[pipeline]:
                remote = os.path.join(ROOTS[target].lstrip("/"), name)
                held = os.path.join(self.server.root, remote)
                if not os.path.exists(held):
                    missing.append(remote)
                elif os.path.getsize(held) != size or local_checksum(held, "sha256") != digest:
                    wrong.append(remote)
                count = publications.get(remote, 0)
                if count > 1:
                    twice.append((remote, count))
                elif count == 0:  # present, but the server was killed between its rename and its log line
                    unpublished.append(remote)
                resent += self._written(stors.get(remote + ".part", []), size) - size
                sizes_sum += size
        interruptions = self.counts["kills"] + self.counts["ftp_restarts"] + self.counts["staging_fills"]
        self.counts.update(resent_bytes=resent, interruptions=interruptions,
                           resent_bound_bytes=interruptions * CHECKPOINT, target_bytes=sizes_sum,
                           published=sum(publications.values()), rnto_not_logged=len(unpublished))
        if self.counts["files"] == 0:
            self.failures.append("no files flowed")
        if missing:
            self.failures.append(f"{len(missing)} files missing on a target: {missing[:5]}")
        if wrong:
            self.failures.append(f"{len(wrong)} files differ on a target: {wrong[:5]}")
        if twice:
            self.failures.append(f"{len(twice)} files published more than once: {twice[:5]}")
        if self.deleted_early:
            self.failures.append(f"{len(self.deleted_early)} source files deleted before every target held them: "
                                 f"{self.deleted_early[:5]}")
        deletable = sum(1 for pipeline, _ in self.expected if pipeline == "del")
        if self.counts["deletions_seen"] != deletable:
            self.failures.append(f"{self.counts['deletions_seen']} of {deletable} delete_after_upload sources removed")
        if resent > interruptions * CHECKPOINT:
            self.failures.append(f"{resent} bytes sent again over {interruptions} interruptions: more than one "
                                 f"checkpoint interval ({CHECKPOINT}) each")

    @staticmethod
    def _written(stors, size):
        """Bytes the server took for one .part file: logged STORs, plus gaps a killed server wrote without logging.

        Each STOR resumes at the server's own SIZE, so a STOR starting beyond where the last logged one ended shows
        bytes received by a server killed before it could log them.
        """
        written, end = 0, 0
        for stor in stors:
            written += stor["received"] + max(0, stor["offset"] - end)
            end = stor["offset"] + stor["received"]
        return written + max(0, size - end) if stors else size


def run_soak(workdir, seed, inject_seconds, kills, restarts, fills, settle_seconds, files_per_second=1.0, log=print):
    """Draw the plan for `seed`, run it, print the figures; returns (figures, failures)."""
    plan = Plan.draw(seed, inject_seconds, kills, restarts, fills, files_per_second, launch_nodes())
    log(f"soak: seed {seed}; {len(plan.drops)} files ({plan.staging_bytes() / MiB:.0f} MiB), {kills} node kills, "
        f"{restarts} FTP server restarts, {fills} staging fills over {inject_seconds:.0f} s; workdir {workdir}")
    figures, failures = Soak(workdir, plan, settle_seconds, log).run()
    log("soak: " + json.dumps(figures, sort_keys=True))
    if failures:
        log(f"soak FAILED (replay with --seed {seed}):")
        for failure in failures:
            log("  " + failure)
    else:
        log(f"soak passed (seed {seed}): every file identical on every target, published once, no early deletion, "
            f"{figures.get('resent_bytes', 0)} bytes sent again over {figures.get('interruptions', 0)} interruptions")
    return figures, failures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="the whole run, setup and checks included")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--kills", type=int, default=None, help="default: 220 in 20 minutes, fewer in less")
    parser.add_argument("--restarts", type=int, default=None, help="default: 50 in 20 minutes")
    parser.add_argument("--fills", type=int, default=None, help="default: 20 in 20 minutes")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    settle = min(180.0, args.minutes * 15)
    inject = args.minutes * 60 - settle - min(60.0, args.minutes * 10)  # startup, teardown and the checks
    share = inject / 960  # the counts of the 20-minute soak, in proportion
    kills = args.kills if args.kills is not None else round(220 * share)
    restarts = args.restarts if args.restarts is not None else round(50 * share)
    fills = args.fills if args.fills is not None else round(20 * share)
    workdir = tempfile.mkdtemp(prefix="filesync-soak-", dir="/var/tmp")
    try:
        _, failures = run_soak(workdir, seed, inject, kills, restarts, fills, settle)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
