"""The soak: files flow through every kind of device filesync has, through `roslaunch filesync sync.launch`, while
faults are injected at random. Every server is a real one on 127.0.0.1.

Pipelines:
- keep:  a folder -> FTP (pyftpdlib in a subprocess, test/support/ftp_server.py, which logs every STOR and RNTO).
- del:   a folder -> two FTP targets with delete_after_upload, so a source file may go only after both hold it.
- drive: a real exFAT drive (an image on a loop device, mounted with exfat-fuse; support/exfat_drive.py) -> FTP.
         The soak plays the camera and the automounter: it writes clips onto the mounted drive and mounts it again
         after each replug; the source finds the drive by its UUID.
- px4:   PX4 logs from a real MAVLink FTP server (MAVSDK as the autopilot, support/mavsdk_autopilot.py) over an
         emulated 921600-baud serial link with PX4's one-session rule (support/linkemu.py) -> Flight Review (the
         stand-in of support/flight_review_server.py) and FTP.

Faults: kill -9 of any node of the launch (roslaunch respawns it), FTP server restarts, drive unplugs (the FUSE
mount dies under its reader and the loop device goes; the drive comes back, perhaps as another /dev/loopN), 20% loss
each way on the MAVLink link for a while, bursts of HTTP 5xx answers and Flight Review outages, and a staging disk (a
small tmpfs) that fills up and frees again. Faults that last (a server down, the lossy link, the full disk) may
overlap; the first to begin applies the fault and the last to end lifts it.

At the end it checks and prints: every file byte-identical on every target; each published (RNTO) at most once on
FTP and at least once on Flight Review; no source file deleted before every target held it verified; bytes sent
again over FTP within one checkpoint interval per interruption; nothing parked or left waiting, with no person
involved. The plan (files, sizes and fault times) comes from the seed, printed first and on failure; replaying a
seed repeats the plan (process timing differs).

  make soak                                                 # 20 minutes, a new seed
  make soak SOAK_SEED=1234                                  # replay a seed
  .venv/bin/python test/support/soak.py --minutes 3 --seed 1234   # shorter (workspace environment sourced)
"""
import argparse
import hashlib
import heapq
import itertools
import json
import os
import random
import re
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
from filesync.paths import PART_SUFFIX  # noqa: E402
from support import exfat_drive  # noqa: E402
from support.flight_review_server import FlightReviewServer, write_ulog  # noqa: E402
from support.ftp_server import FtpServerProcess  # noqa: E402
from support.launch import Launch, RosMaster, launch_nodes, quiet_stderr  # noqa: E402
from support.linkemu import LinkEmulator  # noqa: E402
from support.mavsdk_autopilot import MavsdkAutopilot, Px4SessionRule  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20
CHECKPOINT = 256 * KiB
SERIAL_921600 = 92160  # bytes/s of a 921600-baud 8N1 line, the usual Pixhawk-to-companion link
LINK_LOSS = 0.2
PX4_SESSION_IDLE = 10.0  # PX4 closes an FTP session nobody used for this long
KILL_WEIGHTS = {"ledger": 3, "downloader": 3, "uploader": 3, "finder": 2}  # other nodes of the launch weigh 1
TARGETS = {"keep": ["keep_ftp"], "del": ["del_ftp1", "del_ftp2"], "drive": ["drive_ftp"], "px4": ["px4_ftp", "review"]}
FTP_ROOTS = {"keep_ftp": "/keep", "del_ftp1": "/del1", "del_ftp2": "/del2", "drive_ftp": "/drive", "px4_ftp": "/px4"}
SHARES = {"keep": 0.35, "del": 0.27, "drive": 0.28, "px4": 0.10}  # of the files dropped
# The faults of the 20-minute soak; a shorter one gets them in proportion.
FAULTS_20_MINUTES = {"kill": 220, "ftp_restart": 50, "unplug": 50, "link_loss": 25, "http_5xx": 50,
                     "http_restart": 10, "fill": 20}
VEHICLE_ROOT = "/log"  # where the autopilot's logs are, as the mavlink source sees it
DRIVE_FOLDER = "DCIM/100SOAK"
DRIVE_SERIAL = 0x50A4D41E
DRIVE_CUT = re.compile(r"download:drive: download \S+: drive \S+ went away while reading .*\(wait\)$")


def drive_unavailable():
    """Why this machine cannot make the soak's exFAT drive (the drive pipeline is then left out), or None."""
    reason = exfat_drive.unavailable_reason()
    missing = exfat_drive.missing_tools()
    return reason or (f"missing Debian packages: {', '.join(missing)}" if missing else None)


@dataclass
class Plan:
    """What happens when, drawn from the seed: (time, file) drops and (time, fault) injections."""
    seed: int
    inject_seconds: float
    pipelines: list
    drops: list = field(default_factory=list)  # (at, pipeline, name, size)
    faults: list = field(default_factory=list)  # (at, kind, argument)

    @classmethod
    def draw(cls, seed, inject_seconds, faults, files_per_second, nodes, pipelines):
        """`faults`: {kind: count}; faults of a device whose pipeline is left out are not drawn."""
        rng = random.Random(seed)
        plan = cls(seed, inject_seconds, list(pipelines))
        at = 0.0
        for index in itertools.count():
            at += rng.expovariate(files_per_second)
            if at >= inject_seconds * 0.9:  # the last files still meet faults
                break
            # every pipeline gets a file early on, then they come by their shares
            pipeline = pipelines[index] if index < len(pipelines) else \
                rng.choices(pipelines, [SHARES[p] for p in pipelines])[0]
            plan.drops.append((at, pipeline, *cls._draw_file(rng, pipeline, index)))
        last_log = max((at for at, pipeline, _, _ in plan.drops if pipeline == "px4"), default=None)
        clips = [at for at, pipeline, _, _ in plan.drops if pipeline == "drive"]
        weights = [KILL_WEIGHTS.get(node, 1) for node in nodes]
        for kind, count in sorted(faults.items()):
            if kind == "unplug" and not clips or kind.startswith(("http", "link")) and last_log is None:
                continue
            for _ in range(count):
                if kind == "unplug":  # soon after a clip lands, so that the pull often comes mid-copy
                    moment = rng.choice(clips) + rng.uniform(0.5, 3.0)
                else:  # faults of the px4 link and the web server come before the last log, so that one meets them
                    end = last_log if kind.startswith(("http", "link")) else \
                        inject_seconds * (0.9 if kind == "fill" else 1.0)
                    moment = rng.uniform(min(2.0, end), end)
                plan.faults.append((moment, kind, cls._draw_argument(rng, kind, nodes, weights)))
        plan.faults.sort(key=lambda fault: fault[0])
        return plan

    @staticmethod
    def _draw_file(rng, pipeline, index):
        if pipeline == "px4":  # the ULog payload size; logs are small: the serial link carries about 80 KB/s
            return f"2026-11-25/{index:05d}.ulg", rng.randrange(1, 256 * KiB)
        roll = rng.random()
        size = (rng.choice([0, 1, rng.randrange(2, 64 * KiB)]) if roll < 0.15 else
                rng.randrange(64 * KiB, 1 * MiB) if roll < 0.75 else rng.randrange(1 * MiB, 6 * MiB))
        if pipeline == "drive":
            return f"{DRIVE_FOLDER}/clip{index:05d}.bin", size
        return f"d{index % 4}/f{index:05d}.bin", size

    @staticmethod
    def _draw_argument(rng, kind, nodes, weights):
        return {"kill": lambda: rng.choices(nodes, weights)[0],
                "ftp_restart": lambda: rng.uniform(0.3, 3.0),  # seconds down
                "fill": lambda: rng.uniform(2.0, 8.0),  # seconds full
                "unplug": lambda: rng.uniform(0.3, 4.0),  # seconds away
                "link_loss": lambda: rng.uniform(5.0, 30.0),  # seconds lossy
                "http_5xx": lambda: [rng.choice([500, 502, 503, 504]), rng.randint(1, 4)],  # status, answers
                "http_restart": lambda: rng.uniform(0.5, 5.0)}[kind]()  # seconds down

    def staging_bytes(self):
        return sum(size for _, _, _, size in self.drops)

    def pipeline_bytes(self, pipeline):
        return sum(size for _, p, _, size in self.drops if p == pipeline)

    def fault_counts(self):
        return Counter(kind for _, kind, _ in self.faults)


class Outage:
    """A fault that lasts. Outages of one kind may overlap: the first begin() applies it, the last end() lifts it."""

    def __init__(self, apply, lift):
        self.apply, self.lift = apply, lift
        self.depth = 0

    def begin(self):
        self.depth += 1
        if self.depth == 1:
            self.apply()

    def end(self):
        self.depth -= 1
        if self.depth == 0:
            self.lift()

    def end_all(self):
        if self.depth > 0:
            self.depth = 1
            self.end()


class Soak:
    """One soak run in `workdir` (must exist); run() returns a dict of figures and a list of failures."""

    def __init__(self, workdir, plan, settle_seconds=180.0, log=print):
        self.workdir, self.plan, self.settle_seconds, self.log = workdir, plan, settle_seconds, log
        self.pipelines = plan.pipelines
        self.expected = {}  # (pipeline, name) -> (size, sha256)
        self.deleted_early = []
        self.counts = Counter()
        self.failures = []
        self.stop_event = threading.Event()
        self.staging = os.path.join(workdir, "staging")
        self.inboxes = {p: os.path.join(workdir, "inbox_" + p) for p in ("keep", "del")}
        self.server = FtpServerProcess(os.path.join(workdir, "ftp_root"), os.path.join(workdir, "ftp.log"))
        self.database = os.path.join(workdir, "db", "ledger.db")
        self.tmpfs = False
        self.drive = self.drive_mount = None
        if "drive" in self.pipelines:
            self.drive = exfat_drive.ExfatDrive(os.path.join(workdir, "drive.img"), "SOAKCAM", DRIVE_SERIAL,
                                                size_mb=int(plan.pipeline_bytes("drive") * 1.15 / MiB) + 64)
            self.drive_mount = os.path.join(workdir, "media", "SOAKCAM")
        self.autopilot = self.link = self.session_rule = self.review = None
        if "px4" in self.pipelines:
            self.vehicle_root = os.path.join(workdir, "vehicle")
            self.autopilot = MavsdkAutopilot(self.vehicle_root, log_path=os.path.join(workdir, "mavsdk.log"))
            self.review = FlightReviewServer(os.path.join(workdir, "flight_review"))

    def config(self):
        """The launch's config: every pipeline of the plan."""
        used = {target for pipeline in self.pipelines for target in TARGETS[pipeline]}
        targets = {name: dict(self.server.target_options(root), timeout=10.0)
                   for name, root in FTP_ROOTS.items() if name in used}
        sources = {p: {"kind": "folder", "path": self.inboxes[p], "min_age": 0.0}
                   for p in ("keep", "del") if p in self.pipelines}
        if self.drive:
            sources["drive"] = {"kind": "drive", "uuid": self.drive.uuid, "include": ["*.bin"]}
        if self.autopilot:
            sources["px4"] = {"kind": "mavlink", "url": self.link.url, "root": VEHICLE_ROOT,
                              "session_idle": PX4_SESSION_IDLE + 1.0}
            targets["review"] = {"kind": "flight_review", "server": self.review.url, "timeout": 30.0}
        return {
            "staging_dir": self.staging, "database": self.database, "checkpoint_bytes": CHECKPOINT,
            "scan_interval": 1.0, "poll_interval": 2.0, "lease_seconds": 5.0, "retry_base": 0.2, "retry_cap": 3.0,
            "bwlimit": 3 * MiB, "max_attempts": 5,
            "sources": sources, "targets": targets,
            "pipelines": [{"source": p, "targets": TARGETS[p], "delete_after_upload": p == "del"}
                          for p in self.pipelines],
            "ftp_server": {"enabled": False},
        }

    def remote_name(self, pipeline, name):
        """The file's path under its targets' roots: a drive's files carry the drive's UUID first."""
        return f"{self.drive.uuid}/{name}" if pipeline == "drive" else name

    # Setup and teardown -------------------------------------------------------------------------------------------

    def _mount_staging(self):
        os.makedirs(self.staging, exist_ok=True)
        size = self.plan.staging_bytes() * 1.2 + 64 * MiB
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size)}", "filesync-soak", self.staging],
                                capture_output=True, text=True)
        self.tmpfs = result.returncode == 0
        if not self.tmpfs:
            self.log(f"soak: no tmpfs for staging ({result.stderr.strip()}); staging fills are skipped")

    def _start_devices(self):
        with quiet_stderr(os.path.join(self.workdir, "ftp_server.log")):
            self.server.start()
        if self.drive:
            self.drive.format()
            self._plug_drive()
        if self.autopilot:
            os.makedirs(os.path.join(self.vehicle_root, VEHICLE_ROOT.lstrip("/")), exist_ok=True)
            self.autopilot.start()
            self.session_rule = Px4SessionRule(idle_timeout=PX4_SESSION_IDLE)
            self.link = LinkEmulator(("127.0.0.1", self.autopilot.port), bandwidth=SERIAL_921600,
                                     seed=self.plan.seed, filters=[self.session_rule]).start()
            self.review.start()

    def _stop_devices(self):
        self.server.stop()
        for stop in (self.review and self.review.stop, self.link and self.link.stop,
                     self.autopilot and self.autopilot.stop):
            if stop:
                stop()
        if self.drive:
            self.drive.unplug(self.drive_mount)
        if self.tmpfs:
            subprocess.run(["umount", "-l", self.staging], capture_output=True)
            self.tmpfs = False

    def _plug_drive(self):
        """Plug the drive in and mount it where the automounter would (read-write: the soak writes clips on it)."""
        self.drive.attach()
        self.drive.mount(self.drive_mount)

    # The threads --------------------------------------------------------------------------------------------------

    def _wait_until(self, moment):
        """Sleep until `moment` (monotonic); True when the run is being stopped."""
        return self.stop_event.wait(max(0.0, moment - time.monotonic()))

    def _drop_files(self, started):
        """Files appear in the folders and on the vehicle (written aside, then renamed into place)."""
        rng = random.Random(self.plan.seed + 1)
        for index, (at, pipeline, name, size) in enumerate(self.plan.drops):
            if pipeline == "drive":
                continue  # the drive's thread writes those
            if self._wait_until(started + at):
                return
            if pipeline == "px4":
                final = os.path.join(self.vehicle_root, VEHICLE_ROOT.lstrip("/"), name)
                os.makedirs(os.path.dirname(final), exist_ok=True)
                size = write_ulog(final + ".tmp", payload_bytes=size, seed=self.plan.seed + index)
                digest = local_checksum(final + ".tmp", "sha256")
                os.rename(final + ".tmp", final)
            else:
                final = os.path.join(self.inboxes[pipeline], name)
                temporary = os.path.join(os.path.dirname(final), ".tmp-" + os.path.basename(final))
                os.makedirs(os.path.dirname(final), exist_ok=True)
                data = rng.randbytes(size)
                with open(temporary, "wb") as handle:
                    handle.write(data)
                os.rename(temporary, final)
                digest = hashlib.sha256(data).hexdigest()
            self._expect(pipeline, name, size, digest)

    def _expect(self, pipeline, name, size, digest):
        self.expected[(pipeline, name)] = (size, digest)  # after the file is in place: the watcher looks
        self.counts["files"] += 1
        self.counts[f"files {pipeline}"] += 1
        self.counts["bytes"] += size

    def _drive_life(self, started):
        """The drive's life: clips written onto it while it is plugged in, and unplugs (away a while, then back)."""
        rng = random.Random(self.plan.seed + 2)
        events = sorted([(at, "clip", (name, size)) for at, pipeline, name, size in self.plan.drops
                         if pipeline == "drive"] +
                        [(at, "unplug", away) for at, kind, away in self.plan.faults if kind == "unplug"],
                        key=lambda event: event[0])
        for at, kind, argument in events:
            if self._wait_until(started + at):
                return
            if kind == "unplug":
                self._wait_for_a_copy(seconds=4.0)
                self.drive.unplug(self.drive_mount)  # the FUSE mount dies under any reader, the loop device goes
                self.counts["unplugs"] += 1
                time.sleep(argument)
                self._plug_drive()
            else:
                name, size = argument
                data = rng.randbytes(size)
                self._write_clip(name, data)
                self._expect("drive", name, size, hashlib.sha256(data).hexdigest())

    def _wait_for_a_copy(self, seconds):
        """Wait (at most `seconds`) until a clip is being copied into staging, so that the pull comes mid-copy."""
        folder = os.path.join(self.staging, "drive")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for _, _, names in os.walk(folder):
                if any(name.endswith(PART_SUFFIX) for name in names):
                    return
            time.sleep(0.05)

    def _write_clip(self, name, data):
        """Write a clip as a camera would, but durably before it counts: exfat-fuse's fsync flushes the FAT and
        the directory too, so a later unplug cannot take the file back."""
        final = os.path.join(self.drive_mount, name)
        temporary = os.path.join(os.path.dirname(final), "." + os.path.basename(final) + ".part")
        os.makedirs(os.path.dirname(final), exist_ok=True)
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temporary, final)
        descriptor = os.open(final, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def _watch_deletions(self):
        """A source file of `del` may vanish only once both targets hold it whole: look the moment it is gone."""
        checked = set()
        while not self.stop_event.wait(0.05):
            for (pipeline, name), (size, digest) in list(self.expected.items()):
                if pipeline != "del" or name in checked or os.path.exists(os.path.join(self.inboxes["del"], name)):
                    continue
                checked.add(name)
                for target in TARGETS["del"]:
                    held = os.path.join(self.server.root, FTP_ROOTS[target].lstrip("/"), name)
                    if not os.path.exists(held) or os.path.getsize(held) != size or \
                            local_checksum(held, "sha256") != digest:
                        self.deleted_early.append((name, target))
        self.counts["deletions_seen"] = len(checked)

    def _outages(self):
        """The faults that last, by kind: what begins and what ends them."""
        def restart_ftp():
            with quiet_stderr(os.path.join(self.workdir, "ftp_server.log")):
                self.server.start()

        outages = {"ftp_restart": Outage(self.server.stop, restart_ftp), "fill": Outage(self._fill, self._free)}
        if self.link:
            outages["link_loss"] = Outage(lambda: self.link.set_loss(LINK_LOSS), lambda: self.link.set_loss(0.0))
            outages["http_restart"] = Outage(self.review.stop, self.review.start)
        return outages

    def _fill(self):
        if not self.tmpfs:
            return
        stats = os.statvfs(self.staging)
        try:
            with open(os.path.join(self.staging, ".filler"), "wb") as handle:
                os.posix_fallocate(handle.fileno(), 0, stats.f_bavail * stats.f_frsize)
        except OSError:
            pass  # filled as far as it goes

    def _free(self):
        if self.tmpfs:
            os.remove(os.path.join(self.staging, ".filler"))

    def _inject(self, launch, started, outages):
        """Carry out the plan's faults (the drive's unplugs are the drive thread's) on one timeline."""
        timeline, order = [], itertools.count()

        def at(moment, action):
            heapq.heappush(timeline, (moment, next(order), action))

        def kill(node, tries=0):
            if launch.kill_node(node):
                self.counts[f"kill {node}"] += 1
                self.counts["kills"] += 1
            elif tries < 20:  # still respawning: kill it once it is back
                at(time.monotonic() + 0.5, lambda: kill(node, tries + 1))

        def burst(status, answers):
            self.review.fail_next(status, answers)
            self.counts["http_5xx_bursts"] += 1
            self.counts["http_5xx_planned"] += answers

        names = {"ftp_restart": "ftp_restarts", "fill": "staging_fills", "link_loss": "link_loss_episodes",
                 "http_restart": "http_restarts"}
        for moment, kind, argument in self.plan.faults:
            moment += started
            if kind == "kill":
                at(moment, lambda node=argument: kill(node))
            elif kind == "http_5xx":
                at(moment, lambda status=argument[0], answers=argument[1]: burst(status, answers))
            elif kind in outages:
                at(moment, outages[kind].begin)
                at(moment + argument, outages[kind].end)
                at(moment, lambda name=names[kind]: self.counts.update([name]))
                if kind == "link_loss":
                    self.counts["link_loss_seconds"] += round(argument)
        while timeline:
            if self._wait_until(timeline[0][0]):
                return
            heapq.heappop(timeline)[2]()

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
        threads, outages = [], {}
        try:
            self._start_devices()
            master = RosMaster(self.workdir).start()
            launch = Launch(self.workdir, self.config(), respawn_delay=0.5, name="soak").start()
            launch.wait_nodes(timeout=120)
            started = time.monotonic()
            outages = self._outages()
            work = [(self._drop_files, (started,)), (self._inject, (launch, started, outages)),
                    (self._watch_deletions, ())]
            if self.drive:
                work.append((self._drive_life, (started,)))
            threads = [threading.Thread(target=target, args=args, daemon=True) for target, args in work]
            for thread in threads:
                thread.start()
            for thread in threads[:2] + threads[3:]:  # faults that last end at most 30 s after the last begins
                thread.join(max(0.0, started + self.plan.inject_seconds - time.monotonic()) + 90)
            for outage in outages.values():  # a fault still on (a thread cut short) is lifted now
                outage.end_all()
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
            self._count_device_figures()
            self._stop_devices()
        self._check()
        return dict(self.counts), self.failures

    def _count_device_figures(self):
        downloader_log = os.path.join(self.workdir, "ros_home", "log", "filesync", "filesync_downloader.log")
        if self.drive and os.path.exists(downloader_log):  # what the downloader said when a drive went mid-copy
            with open(downloader_log, encoding="utf-8", errors="replace") as handle:
                self.counts["drive_reads_cut"] = sum(1 for line in handle if DRIVE_CUT.search(line))
        if self.link:
            self.counts.update(link_packets_lost=self.link.up.lost + self.link.down.lost,
                               px4_session_refusals=self.session_rule.refusals)
        if self.review:
            self.counts["http_5xx_answered"] = sum(1 for event in self.review.events
                                                   if event[0] == "POST" and 500 <= event[2] < 600)

    # The checks ---------------------------------------------------------------------------------------------------

    def _check(self):
        events = self.server.events()
        publications = Counter(e["path"] for e in events if e["op"] == "RNTO")
        stors = defaultdict(list)
        for event in events:
            if event["op"] == "STOR":
                stors[event["path"]].append(event)
        uploads = defaultdict(list)  # sha256 -> file names of the logs Flight Review took
        for upload in (self.review.uploads if self.review else []):
            uploads[upload.sha256].append(upload.filename)
        wrong, missing, twice, unpublished, not_on_web = [], [], [], [], []
        resent, sizes_sum, web_copies = 0, 0, 0
        for (pipeline, name), (size, digest) in sorted(self.expected.items()):
            for target in TARGETS[pipeline]:
                if target == "review":
                    copies = [f for f in uploads.get(digest, []) if f == os.path.basename(name)]
                    web_copies += len(copies)
                    if not copies:
                        not_on_web.append(name)
                    continue
                remote = os.path.join(FTP_ROOTS[target].lstrip("/"), self.remote_name(pipeline, name))
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
        # what can cut an FTP upload short; unplugs, link loss and web faults touch other legs
        interruptions = self.counts["kills"] + self.counts["ftp_restarts"] + self.counts["staging_fills"]
        logs = self.counts["files px4"]
        self.counts.update(resent_bytes=resent, interruptions=interruptions,
                           resent_bound_bytes=interruptions * CHECKPOINT, target_bytes=sizes_sum,
                           published=sum(publications.values()), rnto_not_logged=len(unpublished),
                           web_uploads=web_copies, web_uploads_again=max(0, web_copies - logs + len(not_on_web)))
        if self.counts["files"] == 0:
            self.failures.append("no files flowed")
        if missing:
            self.failures.append(f"{len(missing)} files missing on an FTP target: {missing[:5]}")
        if wrong:
            self.failures.append(f"{len(wrong)} files differ on an FTP target: {wrong[:5]}")
        if twice:
            self.failures.append(f"{len(twice)} files published more than once on FTP: {twice[:5]}")
        if not_on_web:
            self.failures.append(f"{len(not_on_web)} logs never reached Flight Review identical: {not_on_web[:5]}")
        if self.deleted_early:
            self.failures.append(f"{len(self.deleted_early)} source files deleted before every target held them: "
                                 f"{self.deleted_early[:5]}")
        deletable = sum(1 for pipeline, _ in self.expected if pipeline == "del")
        if self.counts["deletions_seen"] != deletable:
            self.failures.append(f"{self.counts['deletions_seen']} of {deletable} delete_after_upload sources removed")
        if resent > interruptions * CHECKPOINT:
            self.failures.append(f"{resent} bytes sent again over FTP in {interruptions} interruptions: more than one "
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


def available_pipelines(log=print):
    """Every pipeline this machine can run: the drive needs root, loop devices, FUSE and the exFAT tools."""
    reason = drive_unavailable()
    if reason:
        log(f"soak: the drive pipeline is left out: {reason}")
    return [p for p in TARGETS if p != "drive" or not reason]


def scaled_faults(inject_seconds):
    """The 20-minute soak's fault counts in proportion to `inject_seconds` (it injects for 960 s)."""
    return {kind: round(count * inject_seconds / 960) for kind, count in FAULTS_20_MINUTES.items()}


def run_soak(workdir, seed, inject_seconds, faults, settle_seconds, files_per_second=1.0, log=print):
    """Draw the plan for `seed` with `faults` ({kind: count}), run it and print the figures.

    Returns (figures, failures)."""
    plan = Plan.draw(seed, inject_seconds, faults, files_per_second, launch_nodes(), available_pipelines(log))
    drops = Counter(pipeline for _, pipeline, _, _ in plan.drops)
    log(f"soak: seed {seed}; {len(plan.drops)} files ({plan.staging_bytes() / MiB:.0f} MiB; "
        f"{', '.join(f'{p} {n}' for p, n in sorted(drops.items()))}); faults over {inject_seconds:.0f} s: "
        f"{', '.join(f'{k} {n}' for k, n in sorted(plan.fault_counts().items()))}; workdir {workdir}")
    figures, failures = Soak(workdir, plan, settle_seconds, log).run()
    log("soak: " + json.dumps(figures, sort_keys=True))
    if failures:
        log(f"soak FAILED (replay with --seed {seed}):")
        for failure in failures:
            log("  " + failure)
    else:
        log(f"soak passed (seed {seed}): every file identical on every target, published once on FTP and at least "
            f"once on Flight Review, no early deletion, {figures.get('resent_bytes', 0)} bytes sent again over FTP "
            f"in {figures.get('interruptions', 0)} interruptions")
    return figures, failures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="the whole run, setup and checks included")
    parser.add_argument("--seed", type=int, default=None)
    for kind, count in FAULTS_20_MINUTES.items():
        parser.add_argument(f"--{kind.replace('_', '-')}", type=int, default=None, dest=kind,
                            help=f"how many {kind} faults (default: {count} in 20 minutes, in proportion in less)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    settle = min(180.0, args.minutes * 15)
    inject = args.minutes * 60 - settle - min(60.0, args.minutes * 10)  # startup, teardown and the checks
    faults = {kind: getattr(args, kind) if getattr(args, kind) is not None else count
              for kind, count in scaled_faults(inject).items()}
    workdir = tempfile.mkdtemp(prefix="filesync-soak-", dir="/var/tmp")
    try:
        _, failures = run_soak(workdir, seed, inject, faults, settle)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
