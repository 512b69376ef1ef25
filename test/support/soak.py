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
- twin:  a second folder -> the keep pipeline's FTP target, with delete_after_upload: the same relative name
         (sessNNN/log001.ulg) appears on both folders, so one of the two lands under a conflict name.

Faults: kill -9 of any node of the launch (roslaunch respawns it), FTP server restarts, drive unplugs (the FUSE
mount dies under its reader and the loop device goes; the drive comes back, perhaps as another /dev/loopN), 20% loss
each way on the MAVLink link for a while, bursts of HTTP 5xx answers and Flight Review outages, and a staging disk (a
small tmpfs) that fills up and frees again. Faults that last (a server down, the lossy link, the full disk) may
overlap; the first to begin applies the fault and the last to end lifts it.

Content events on the folder sources (a file is its content, not its name): files rewritten with the same size (in
place or written aside and renamed) once their copy is made, appended to while they upload (on delete_after_upload
folders too), rewritten again within a scan interval (a version that never stays), the same name on two folders into
one target, and odd names (bytes that are not UTF-8, a newline, '#', '%', a leading dash, 251-255-byte names).

Ground truth: the soak is the only writer of its sources, so it records every version (SHA-256) each source file
held, when it was written and until when it stayed, and, when filesync removed a file, which version it held then.
Every 1 s it snapshots the hash of every published file on the FTP targets.

At the end it checks and prints:
- every version that stayed two scan intervals (or that filesync copied) is on every target of its pipeline, byte-
  identical, under its own safe name or a conflict name the ledger records as that version's upload location;
  every log on Flight Review at least once; no published file holds bytes that were never a version of a source;
- no source file was removed whose bytes then were not on every target (looked at the moment it vanished, and at
  the end through the ledger's locations), and every delete_after_upload source is removed in the end;
- nothing stalled: at the end of the settle phase no task waits or runs, none is parked, and every skipped one says
  an expected reason (a version replaced before its copy, a removal refused because the source changed);
- no final name was overwritten: a published file's bytes never changed (the snapshots) and each name was
  published (RNTO) at most once on FTP;
- bytes sent again over FTP within one checkpoint interval per interruption.
Figures: versions, conflict copies, removals refused because the source changed, odd names carried, and the
faults, printed as a table. The plan (files, sizes, content events and fault times) comes from the seed, printed first
and on failure; replaying a seed repeats the plan (process timing differs).

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
from typing import Optional
from urllib.parse import unquote, urlparse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # test/, for `support`

from filesync.devices.base import local_checksum  # noqa: E402
from filesync.paths import PART_SUFFIX, conflict_name, part_name, safe_name  # noqa: E402
from support import exfat_drive  # noqa: E402
from support.flight_review_server import FlightReviewServer, write_ulog  # noqa: E402
from support.ftp_server import FtpServerProcess  # noqa: E402
from support.launch import Launch, RosMaster, launch_nodes, quiet_stderr  # noqa: E402
from support.linkemu import LinkEmulator  # noqa: E402
from support.mavsdk_autopilot import MavsdkAutopilot, Px4SessionRule  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20
CHECKPOINT = 256 * KiB
SCAN_INTERVAL = 1.0
STAYED = 2 * SCAN_INTERVAL  # a version unchanged this long "stayed": filesync must carry it
SERIAL_921600 = 92160  # bytes/s of a 921600-baud 8N1 line, the usual Pixhawk-to-companion link
LINK_LOSS = 0.2
PX4_SESSION_IDLE = 10.0  # PX4 closes an FTP session nobody used for this long
KILL_WEIGHTS = {"ledger": 3, "downloader": 3, "uploader": 3, "finder": 2}  # other nodes of the launch weigh 1
TARGETS = {"keep": ["keep_ftp"], "del": ["del_ftp1", "del_ftp2"], "drive": ["drive_ftp"], "px4": ["px4_ftp", "review"],
           "twin": ["keep_ftp"]}
FTP_ROOTS = {"keep_ftp": "/keep", "del_ftp1": "/del1", "del_ftp2": "/del2", "drive_ftp": "/drive", "px4_ftp": "/px4"}
SHARES = {"keep": 0.35, "del": 0.27, "drive": 0.28, "px4": 0.10, "twin": 0.0}  # of the files dropped
FOLDERS = ("keep", "del", "twin")  # the folder sources: content events happen there
DELETING = ("del", "twin")  # pipelines with delete_after_upload
# The faults and content events of the 20-minute soak; a shorter one gets them in proportion.
FAULTS_20_MINUTES = {"kill": 220, "ftp_restart": 50, "unplug": 50, "link_loss": 25, "http_5xx": 50,
                     "http_restart": 10, "fill": 20}
CONTENT_20_MINUTES = {"rewrite": 60, "append": 60, "flicker": 20, "twin": 25, "odd": 40}
# Why a task may end skipped: a version replaced before its copy was made, a removal refused because the source
# holds other bytes now. Anything else skipped, and anything parked, is a failure.
EXPECTED_SKIPS = {"download": ("replaced on the source by version",),
                  "remove": ("not removed: the source holds version", "not removed: the source changed after the copy")}
EXPECTED_PARKED = ()  # no person steps in during a soak: nothing may wait for one
REFUSED_REMOVALS = ("changed after the copy", "the source holds version")
TRANSFERS = 4  # uploads at once per FTP target and copies at once per folder source (issue 18)
VEHICLE_ROOT = "/log"  # where the autopilot's logs are, as the mavlink source sees it
DRIVE_FOLDER = "DCIM/100SOAK"
DRIVE_CUT = re.compile(r"download:drive(#\d+)?: download \S+: drive \S+ went away while reading .*\(wait\)$")


def drive_unavailable():
    """Why this machine cannot make the soak's exFAT drive (the drive pipeline is then left out), or None."""
    reason = exfat_drive.unavailable_reason()
    missing = exfat_drive.missing_tools()
    return reason or (f"missing Debian packages: {', '.join(missing)}" if missing else None)


def odd_name(kind, index):
    """An odd file name (as the device lists it: undecodable bytes surrogate-escaped) that filesync must carry.

    The long ones stay within 255 bytes in their safe form too (an escape takes 3 bytes for 1)."""
    tag = b"%05d" % index
    raw = [b"caf\xe9-" + tag + b".bin",  # Latin-1, not UTF-8
           b"new\nline-" + tag + b".bin",
           b"#hash " + tag + b" #.bin",
           b"pct%41 100%-" + tag + b".bin",  # '%' before two hex digits (escaped as %25) and a lone one
           b"-dash-" + tag + b".bin",
           b"L" + tag + b"\xe9" + b"x" * (251 - 11) + b".bin",  # 251 bytes, 253 in safe form
           *(b"L" + tag + b"#" + b"y" * (length - 11) + b".bin" for length in (252, 253, 254, 255))][kind % 10]
    return os.fsdecode(raw)


def content_bytes(key, size):
    """Reproducible file contents: the same key gives the same bytes (twins that are meant to be identical)."""
    return random.Random(key.encode("utf-8", "surrogateescape")).randbytes(size)


@dataclass
class Plan:
    """What happens when, drawn from the seed: (time, file) drops, content events and (time, fault) injections."""
    seed: int
    inject_seconds: float
    pipelines: list
    drops: list = field(default_factory=list)  # (at, pipeline, name, size)
    faults: list = field(default_factory=list)  # (at, kind, argument)
    events: list = field(default_factory=list)  # (at, kind, pipeline, name, argument): content events
    odd: set = field(default_factory=set)  # (pipeline, name) of the files with odd names
    identical_twins: set = field(default_factory=set)  # twin names whose two files hold the same bytes

    @classmethod
    def draw(cls, seed, inject_seconds, faults, files_per_second, nodes, pipelines, content=None):
        """`faults`: {kind: count}; faults of a device whose pipeline is left out are not drawn. `content`: {kind:
        count} of content events (rewrite, append, flicker, twin, odd), on the folder pipelines of the plan."""
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
        plan._draw_content(random.Random(f"{seed}/content"), content or {})
        return plan

    def _draw_content(self, rng, content):
        """Content events from their own generator, so that a seed's files and faults stay what they were."""
        folders = [p for p in FOLDERS if p in self.pipelines]
        if not folders:
            return
        latest = self.inject_seconds * 0.8  # events end while faults still come, and settle afterwards
        candidates = [i for i, (at, p, _, _) in enumerate(self.drops) if p in folders and at < latest]
        for kind, index in enumerate(rng.sample(candidates, min(content.get("odd", 0), len(candidates)))):
            at, pipeline, name, size = self.drops[index]
            name = f"{name.rsplit('/', 1)[0]}/{odd_name(kind, index)}"
            self.drops[index] = (at, pipeline, name, size)
            self.odd.add((pipeline, name))
        if "twin" in folders and "keep" in folders:
            for number in range(content.get("twin", 0)):
                at, name, size = rng.uniform(1.0, latest), f"sess{number:03d}/log001.ulg", rng.randrange(1, 2 * MiB)
                self.drops += [(at, "keep", name, size), (at + rng.uniform(0.0, 1.0), "twin", name, size)]
                if rng.random() < 0.25:
                    self.identical_twins.add(name)
        self.drops.sort(key=lambda drop: drop[0])
        folder_drops = [drop for drop in self.drops if drop[1] in folders and drop[0] < latest]
        big = [drop for drop in folder_drops if drop[3] >= 256 * KiB] or folder_drops
        for kind in ("rewrite", "append", "flicker"):
            for _ in range(content.get(kind, 0) if folder_drops else 0):
                at, pipeline, name, size = rng.choice(big if kind == "append" else folder_drops)
                if kind == "rewrite":  # once its copy is made: in place, or written aside and renamed
                    event = (at + rng.uniform(1.0, 20.0), kind, pipeline, name, rng.random() < 0.5)
                elif kind == "append":  # while it uploads
                    event = (at + rng.uniform(0.1, 2.0), kind, pipeline, name, rng.randrange(1, 512 * KiB))
                else:  # a new version within a scan interval: the first one never stays
                    event = (at + rng.uniform(0.1, 0.6), kind, pipeline, name, None)
                self.events.append((min(event[0], self.inject_seconds * 0.85), *event[1:]))
        self.events.sort(key=lambda event: event[0])

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
        """Bytes staged at most: every drop, and a new version per content event."""
        sizes = {(p, name): size for _, p, name, size in self.drops}
        events = sum(sizes.get((p, name), 0) + (argument if kind == "append" else 0)
                     for _, kind, p, name, argument in self.events)
        return sum(size for _, _, _, size in self.drops) + events

    def pipeline_bytes(self, pipeline):
        return sum(size for _, p, _, size in self.drops if p == pipeline)

    def fault_counts(self):
        return Counter(kind for _, kind, _ in self.faults)

    def event_counts(self):
        counts = Counter(kind for _, kind, _, _, _ in self.events)
        counts.update(odd=len(self.odd), twin=len({name for _, p, name, _ in self.drops if p == "twin"} &
                                                  {name for _, p, name, _ in self.drops if p == "keep"}))
        return counts


@dataclass
class Version:
    """One content a source file held: its SHA-256 and size, its time as the source lists it, when it was written
    and until when it stayed (monotonic; None: still there), and whether filesync removed the file holding it."""
    sha256: str
    size: int
    mtime: float
    written: float
    until: Optional[float] = None
    deleted: bool = False

    def stayed(self, end):
        return (self.until if self.until is not None else end) - self.written >= STAYED


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


class HashCache:
    """SHA-256 of local files, computed again only when a file's size, time or inode changed."""

    def __init__(self):
        self._known = {}
        self._lock = threading.Lock()

    def sha256(self, path):
        """The file's SHA-256, or None where there is no file."""
        try:
            status = os.stat(path)
        except OSError:
            return None
        key = (status.st_size, status.st_mtime_ns, status.st_ino)
        with self._lock:
            known = self._known.get(path)
        if known and known[0] == key:
            return known[1]
        try:
            digest = local_checksum(path, "sha256")
        except OSError:
            return None
        with self._lock:
            self._known[path] = (key, digest)
        return digest


class LedgerView:
    """The ledger's rows as read from its SQLite file (read-only): files with their tasks, by (source, path)."""

    def __init__(self, rows):
        self.rows = rows  # dicts: id, source, path, version, size, mtime, sha256, state, error, tasks
        self.by_name = defaultdict(list)
        for row in rows:
            self.by_name[(row["source"], row["path"])].append(row)

    @classmethod
    def read(cls, database):
        """The ledger in `database`, or None where it cannot be read (not there yet, or being replaced)."""
        try:
            db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
        except sqlite3.Error:
            return None
        try:
            files = db.execute("SELECT id, source, path, version, size, mtime, sha256, state, error FROM files "
                               "ORDER BY source, path, version").fetchall()
            tasks = db.execute("SELECT file_id, kind, device, state, error, location FROM tasks").fetchall()
        except sqlite3.Error:
            return None
        finally:
            db.close()
        rows = {row[0]: dict(zip(("id", "source", "path", "version", "size", "mtime", "sha256", "state", "error"),
                                 row), tasks={}) for row in files}
        for file_id, kind, device, state, error, location in tasks:
            if file_id in rows:
                rows[file_id]["tasks"][(kind, device)] = dict(state=state, error=error, location=location)
        return cls(list(rows.values()))

    def tasks(self):
        """(row, kind, device, task) for every task."""
        return [(row, kind, device, task) for row in self.rows for (kind, device), task in row["tasks"].items()]


class Soak:
    """One soak run in `workdir` (must exist); run() returns a dict of figures and a list of failures."""

    def __init__(self, workdir, plan, settle_seconds=180.0, log=print):
        self.workdir, self.plan, self.settle_seconds, self.log = workdir, plan, settle_seconds, log
        self.pipelines = plan.pipelines
        self.history = {}  # (pipeline, name as listed) -> [Version], oldest first: the ground truth
        self.deleted_early = []  # (name, target): removed while a target did not hold its bytes
        self.published = {}  # path under the FTP root -> SHA-256 it had when first seen
        self.overwritten = []  # (path, first SHA-256, later SHA-256)
        self.hashes = HashCache()
        self.settle_ledger = None  # the ledger at the end of the settle phase
        self.ended = None  # when the content events and faults stopped (monotonic)
        self._events_end = float("inf")
        self.counts = Counter()
        self.failures = []
        self.stop_event = threading.Event()
        self._locks_guard = threading.Lock()
        self._file_locks, self._event_locks = defaultdict(threading.Lock), defaultdict(threading.Lock)
        self.staging = os.path.join(workdir, "staging")
        self.inboxes = {p: os.path.join(workdir, "inbox_" + p) for p in FOLDERS}
        self.server = FtpServerProcess(os.path.join(workdir, "ftp_root"), os.path.join(workdir, "ftp.log"))
        self.database = os.path.join(workdir, "db", "ledger.db")
        self.tmpfs = False
        self.drive = self.drive_mount = None
        if "drive" in self.pipelines:
            # a label and serial (its UUID) of its own: the drive source finds its drive among every loop device on
            # the machine, and two soaks with one UUID at once (make soak beside make test) read each other's drive
            label = exfat_drive.unique_label()
            self.drive = exfat_drive.ExfatDrive(os.path.join(workdir, "drive.img"), label, exfat_drive.unique_serial(),
                                                size_mb=int(plan.pipeline_bytes("drive") * 1.15 / MiB) + 64)
            self.drive_mount = os.path.join(workdir, "media", label)
        self.autopilot = self.link = self.session_rule = self.review = None
        self.vehicle_root = os.path.join(workdir, "vehicle")
        if "px4" in self.pipelines:
            self.autopilot = MavsdkAutopilot(self.vehicle_root, log_path=os.path.join(workdir, "mavsdk.log"))
            self.review = FlightReviewServer(os.path.join(workdir, "flight_review"))

    def config(self):
        """The launch's config: every pipeline of the plan."""
        used = {target for pipeline in self.pipelines for target in TARGETS[pipeline]}
        targets = {name: dict(self.server.target_options(root), timeout=10.0, transfers=TRANSFERS)
                   for name, root in FTP_ROOTS.items() if name in used}
        sources = {p: {"kind": "folder", "path": self.inboxes[p], "min_age": 0.0, "transfers": TRANSFERS}
                   for p in FOLDERS if p in self.pipelines}
        if self.drive:
            sources["drive"] = {"kind": "drive", "uuid": self.drive.uuid, "include": ["*.bin"]}
        if self.autopilot:
            sources["px4"] = {"kind": "mavlink", "url": self.link.url, "root": VEHICLE_ROOT,
                              "session_idle": PX4_SESSION_IDLE + 1.0}
            targets["review"] = {"kind": "flight_review", "server": self.review.url, "timeout": 30.0}
        return {
            "staging_dir": self.staging, "database": self.database, "checkpoint_bytes": CHECKPOINT,
            "scan_interval": SCAN_INTERVAL, "poll_interval": 2.0, "lease_seconds": 5.0, "retry_base": 0.2,
            "retry_cap": 3.0, "bwlimit": 3 * MiB, "max_attempts": 5,
            "sources": sources, "targets": targets,
            "pipelines": [{"source": p, "targets": TARGETS[p], "delete_after_upload": p in DELETING}
                          for p in self.pipelines],
            "ftp_server": {"enabled": False},
        }

    def remote_name(self, pipeline, name):
        """The file's path under its targets' roots: a drive's files carry the drive's UUID first."""
        return f"{self.drive.uuid}/{name}" if pipeline == "drive" else name

    def ledger_path(self, pipeline, name):
        """The file's path in the ledger and on its targets: the safe form of its name (paths.safe_name)."""
        return self.remote_name(pipeline, safe_name(name))

    def target_path(self, target, pipeline, name):
        """Where the file's own name is on an FTP target, relative to the server's root."""
        return f"{FTP_ROOTS[target].lstrip('/')}/{self.ledger_path(pipeline, name)}"

    def source_path(self, pipeline, name):
        """The local path of a source file the soak writes."""
        if pipeline == "px4":
            return os.path.join(self.vehicle_root, VEHICLE_ROOT.lstrip("/"), name)
        if pipeline == "drive":
            return os.path.join(self.drive_mount, name)
        return os.path.join(self.inboxes[pipeline], name)

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

    # The ground truth ---------------------------------------------------------------------------------------------

    def _lock(self, table, key):
        with self._locks_guard:
            return table[key]

    def record_version(self, pipeline, name, sha256, size, mtime, began=None, written=None):
        """Note that the source file now holds these bytes (the last one it held stays until `began`)."""
        written = time.monotonic() if written is None else written
        versions = self.history.setdefault((pipeline, name), [])
        if versions and versions[-1].until is None:
            versions[-1].until = written if began is None else began
        else:
            self.counts["files"] += 1
            self.counts[f"files {pipeline}"] += 1
        versions.append(Version(sha256, size, mtime, written))
        self.counts["bytes"] += size

    def _write_aside(self, pipeline, name, data):
        """Write a whole new file beside the name, then rename it into place (a reader keeps the old bytes)."""
        final = self.source_path(pipeline, name)
        temporary = os.path.join(os.path.dirname(final), f".tmp-{threading.get_ident()}")  # never listed ('.*')
        os.makedirs(os.path.dirname(final), exist_ok=True)
        began = time.monotonic()
        with open(temporary, "wb") as handle:
            handle.write(data)
        mtime = os.stat(temporary).st_mtime
        os.rename(temporary, final)
        self.record_version(pipeline, name, hashlib.sha256(data).hexdigest(), len(data), mtime, began)

    def _write_in_place(self, pipeline, name, data, append):
        """Rewrite the file's bytes in place (same size) or append to it; False where the file is gone."""
        began = time.monotonic()
        try:
            descriptor = os.open(self.source_path(pipeline, name), os.O_RDWR | (os.O_APPEND if append else 0))
        except FileNotFoundError:
            return False
        try:
            if append:
                os.write(descriptor, data)
            else:
                os.pwrite(descriptor, data, 0)
            status = os.fstat(descriptor)
            if status.st_nlink == 0:  # filesync removed it while it was written: the removal took the old bytes
                self.counts["deleted_mid_write"] += 1
                self._removed(pipeline, name)
                return True
            digest = hashlib.sha256()
            offset = 0
            while offset < status.st_size:  # what the file holds now, read through our own descriptor
                block = os.pread(descriptor, 1 << 20, offset)
                digest.update(block)
                offset += len(block)
        finally:
            os.close(descriptor)
        self.record_version(pipeline, name, digest.hexdigest(), status.st_size, status.st_mtime, began)
        return True

    def _removed(self, pipeline, name):
        """filesync removed the file (the soak never does): its last version went; did every target hold it?"""
        version = self.history[(pipeline, name)][-1]
        version.deleted, version.until = True, time.monotonic()
        self.counts["deletions_seen"] += 1
        for target in TARGETS[pipeline]:
            if self._find_copy(target, pipeline, name, version) is None:
                self.deleted_early.append((name, target))

    def _notice_removal(self, pipeline, name):
        """Under the file's lock: if the file is gone, filesync removed it (its removal is recorded once)."""
        versions = self.history.get((pipeline, name))
        if versions and not versions[-1].deleted and not os.path.lexists(self.source_path(pipeline, name)):
            self._removed(pipeline, name)

    def _find_copy(self, target, pipeline, name, version):
        """Where on an FTP target (a path under the server's root) this version's bytes are, under its own name or
        one of its conflict names; None where they are not."""
        own = self.target_path(target, pipeline, name)
        root = FTP_ROOTS[target].lstrip("/")
        candidates = [own] + [f"{root}/{conflict_name(self.ledger_path(pipeline, name), version.mtime, 0, attempt)}"
                              for attempt in range(10)]
        for path in candidates:
            if self.hashes.sha256(os.path.join(self.server.root, path)) == version.sha256:
                return path
        return None

    def _ftp_relative(self, location):
        """The path under the FTP server's root of an ftp:// location the ledger recorded (None for others)."""
        parsed = urlparse(location or "")
        return unquote(parsed.path).lstrip("/") if parsed.scheme == "ftp" else None

    # The threads --------------------------------------------------------------------------------------------------

    def _guarded(self, work, *args):
        """Run one of the soak's threads; an exception in it is a failure of the soak, never a silent gap."""
        try:
            work(*args)
        except Exception as error:  # noqa: BLE001 - reported as a failure with its place
            self.failures.append(f"soak thread {work.__name__} failed: {error!r}")
            self.log(f"soak: {work.__name__} failed: {error!r}")

    def _wait_until(self, moment):
        """Sleep until `moment` (monotonic); True when the run is being stopped."""
        return self.stop_event.wait(max(0.0, moment - time.monotonic()))

    def _drop_files(self, started):
        """Files appear in the folders and on the vehicle (written aside, then renamed into place)."""
        for index, (at, pipeline, name, size) in enumerate(self.plan.drops):
            if pipeline == "drive":
                continue  # the drive's thread writes those
            if self._wait_until(started + at):
                return
            if pipeline == "px4":
                final = self.source_path(pipeline, name)
                os.makedirs(os.path.dirname(final), exist_ok=True)
                size = write_ulog(final + ".tmp", payload_bytes=size, seed=self.plan.seed + index)
                digest = local_checksum(final + ".tmp", "sha256")
                mtime = os.stat(final + ".tmp").st_mtime
                os.rename(final + ".tmp", final)
                self.record_version(pipeline, name, digest, size, mtime)
                continue
            identical = pipeline in ("keep", "twin") and name in self.plan.identical_twins
            data = content_bytes(f"{self.plan.seed}/{name}" if identical else f"{self.plan.seed}/{pipeline}/{name}",
                                 size)
            with self._lock(self._file_locks, (pipeline, name)):
                self._write_aside(pipeline, name, data)

    def _content_events(self, started):
        """The plan's content events, each in a thread of its own (a rewrite waits for its copy to be made)."""
        workers = []
        self._events_end = started + self.plan.inject_seconds  # an event still waiting for its copy then is skipped
        for number, (at, kind, pipeline, name, argument) in enumerate(self.plan.events):
            if self._wait_until(started + at):
                break
            worker = threading.Thread(target=self._guarded, daemon=True,
                                      args=(self._content_event, number, kind, pipeline, name, argument))
            worker.start()
            workers.append(worker)
        deadline = self._events_end + 10.0
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    def _content_event(self, number, kind, pipeline, name, argument):
        key = (pipeline, name)
        with self._lock(self._event_locks, key):  # events on one file happen one after another
            if not self._wait(lambda: key in self.history, 10.0):
                self.counts["content_events_skipped"] += 1
                return
            if kind in ("rewrite", "append"):
                # a version replaced before filesync could copy it is lost to it: wait until its copy is made
                # (an append waits for an upload in flight), so that every version that stayed can be checked
                moment = self._wait_for_copy(pipeline, name, uploading=kind == "append")
                if moment is None:
                    self.counts["content_events_skipped"] += 1
                    return
                if kind == "append" and moment == "uploading":
                    self.counts["appends_mid_upload"] += 1
            rng = random.Random(f"{self.plan.seed}/event/{number}")
            with self._lock(self._file_locks, key):
                self._notice_removal(pipeline, name)
                current = self.history[key][-1]
                extra = rng.randbytes(argument) if kind == "append" else b""
                data = rng.randbytes(current.size)
                if current.deleted:  # removed already: the same name appears again
                    self._write_aside(pipeline, name, data + extra)
                    self.counts["recreated"] += 1
                elif kind == "append":
                    self._write_in_place(pipeline, name, extra, append=True) or \
                        self._write_aside(pipeline, name, data + extra)
                elif kind == "rewrite" and argument and current.size:
                    self._write_in_place(pipeline, name, data, append=False) or self._write_aside(pipeline, name, data)
                    self.counts["rewrites_in_place"] += 1
                else:
                    self._write_aside(pipeline, name, data)
            self.counts[f"{kind}s"] += 1

    def _wait(self, condition, seconds, step=0.1):
        """Wait until `condition()` (at most `seconds`); False on timeout or when the run is being stopped."""
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline or self.stop_event.wait(step):
                return False
        return True

    def _wait_for_copy(self, pipeline, name, uploading, seconds=30.0):
        """Wait until the file's current version is copied: 'uploading' (an upload runs), 'copied', or None."""
        version = self.history[(pipeline, name)][-1]
        if version.deleted:
            return "copied"
        path = self.ledger_path(pipeline, name)
        seconds = max(1.0, min(seconds, self._events_end - time.monotonic()))
        deadline = time.monotonic() + seconds
        while not self.stop_event.wait(0.1):
            tasks = self._version_tasks(pipeline, path, version)
            if tasks.get("download") == "done":
                uploads = tasks.get("uploads", [])
                if not uploading:
                    return "copied"
                if "active" in uploads:
                    return "uploading"
                if all(state == "done" for state in uploads) or time.monotonic() > deadline - seconds / 2:
                    return "copied"  # uploaded already, or no upload seen moving for a while: the copy is enough
            if time.monotonic() > deadline:
                return None
        return None

    def _version_tasks(self, pipeline, path, version):
        """{'download': state, 'uploads': [states]} of this version in the ledger ({} where not found)."""
        try:
            db = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=2)
        except sqlite3.Error:
            return {}
        try:
            rows = db.execute("SELECT t.kind, t.state FROM files f JOIN tasks t ON t.file_id = f.id WHERE f.source = ? "
                              "AND f.path = ? AND f.size = ? AND abs(f.mtime - ?) < 1e-6",
                              (pipeline, path, version.size, version.mtime)).fetchall()
        except sqlite3.Error:
            return {}
        finally:
            db.close()
        found = {"uploads": [state for kind, state in rows if kind == "upload"]}
        found.update((kind, state) for kind, state in rows if kind == "download")
        return found

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
                mtime = self._write_clip(name, data)
                self.record_version("drive", name, hashlib.sha256(data).hexdigest(), size, mtime)

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
        the directory too, so a later unplug cannot take the file back. Returns its time."""
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
            return os.fstat(descriptor).st_mtime
        finally:
            os.close(descriptor)

    def _watch_deletions(self):
        """A source file of a delete_after_upload pipeline may vanish only once every target holds the bytes it had
        then: look the moment it is gone."""
        while not self.stop_event.wait(0.05):
            for (pipeline, name), versions in list(self.history.items()):
                if pipeline in DELETING and not versions[-1].deleted and \
                        not os.path.lexists(self.source_path(pipeline, name)):
                    with self._lock(self._file_locks, (pipeline, name)):
                        self._notice_removal(pipeline, name)

    def _watch_targets(self):
        """Every second, the hash of every published file on the FTP targets: a final name's bytes never change."""
        while not self.stop_event.wait(1.0):
            self._snapshot_targets()

    def _snapshot_targets(self):
        for directory, _, names in os.walk(self.server.root):
            for name in names:
                if name.endswith(PART_SUFFIX):
                    continue
                path = os.path.join(directory, name)
                digest = self.hashes.sha256(path)
                if digest is None:
                    continue
                relative = os.path.relpath(path, self.server.root)
                first = self.published.setdefault(relative, digest)
                if first != digest and not any(seen[0] == relative and seen[2] == digest for seen in self.overwritten):
                    self.overwritten.append((relative, first, digest))

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

    def _settled(self):
        """(settled, detail): nothing waits or runs, and every file's last version went where it must."""
        ledger = LedgerView.read(self.database)
        if ledger is None:
            return False, "ledger not readable"
        busy = sum(1 for _, _, _, task in ledger.tasks() if task["state"] in ("waiting", "active"))
        parked = [(row["source"], row["path"], f"{kind} {device}: {task['error']}")
                  for row, kind, device, task in ledger.tasks() if task["state"] == "parked"]
        if parked:
            return True, f"parked: {parked[:5]}"
        behind = [key for key, versions in self.history.items() if not self._last_version_done(ledger, key)]
        return busy == 0 and not behind, dict(Counter(row["state"] for row in ledger.rows), busy=busy,
                                              behind=len(behind))

    def _last_version_done(self, ledger, key):
        pipeline, name = key
        last = self.history[key][-1]
        if pipeline in DELETING:
            return last.deleted
        rows = ledger.by_name.get((pipeline, self.ledger_path(pipeline, name)), [])
        return any(row["size"] == last.size and row["state"] == "uploaded" and
                   (pipeline not in FOLDERS or abs(row["mtime"] - last.mtime) < 1e-6) for row in rows)

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
            finite = [(self._drop_files, (started,)), (self._inject, (launch, started, outages)),
                      (self._content_events, (started,))]
            if self.drive:
                finite.append((self._drive_life, (started,)))
            watchers = [(self._watch_deletions, ()), (self._watch_targets, ())]
            threads = [threading.Thread(target=self._guarded, args=(target, *args), daemon=True)
                       for target, args in finite + watchers]
            for thread in threads:
                thread.start()
            for thread in threads[:len(finite)]:  # faults that last end at most 30 s after the last begins
                thread.join(max(0.0, started + self.plan.inject_seconds - time.monotonic()) + 90)
            for outage in outages.values():  # a fault still on (a thread cut short) is lifted now
                outage.end_all()
            self.ended = inject_end = time.monotonic()
            deadline = inject_end + self.settle_seconds
            settled, detail = False, ""
            while time.monotonic() < deadline:
                settled, detail = self._settled()
                if settled:
                    break
                time.sleep(1.0)
            self.counts["settle_seconds"] = round(time.monotonic() - inject_end, 1)
            time.sleep(1.0)  # let the deletion watcher see the last removals
            self.settle_ledger = LedgerView.read(self.database)
            if not settled:
                self.failures.append(f"not settled {self.settle_seconds:.0f} s after the faults stopped "
                                     f"(no person steps in): {detail}")
            if self.settle_ledger is None:
                self.failures.append("the ledger could not be read at the end of the settle phase")
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
        end = self.ended if self.ended is not None else time.monotonic()
        self._snapshot_targets()
        ledger = LedgerView.read(self.database) or LedgerView([])  # the launch has stopped: read-only, as it is
        uploads = defaultdict(list)  # sha256 -> file names of the logs Flight Review took
        for upload in (self.review.uploads if self.review else []):
            uploads[upload.sha256].append(upload.filename)
        self._check_versions_carried(ledger, uploads, end)
        self._check_removals(ledger, uploads)
        if self.settle_ledger is not None:
            self._check_nothing_stalled(self.settle_ledger)
        self._check_never_overwritten()
        self._check_resent()
        self._count_content_figures(ledger)
        if self.counts["files"] == 0:
            self.failures.append("no files flowed")

    def _where(self, target, pipeline, name, version, rows, uploads):
        """Where a version is on a target: (None, path) when it is there as it must be, else (problem, detail)."""
        if target == "review":
            return (None, "review") if os.path.basename(name) in uploads.get(version.sha256, []) else ("web", name)
        own = self.target_path(target, pipeline, name)
        if self.hashes.sha256(os.path.join(self.server.root, own)) == version.sha256:
            return None, own
        recorded = []
        for row in rows:  # the ledger's rows of this version: where its upload says it landed
            location = row["tasks"].get(("upload", target), {}).get("location", "")
            if row["sha256"] != version.sha256 or not location:
                continue
            relative = self._ftp_relative(location)
            recorded.append(relative)
            conflicts = {f"{FTP_ROOTS[target].lstrip('/')}/{conflict_name(row['path'], row['mtime'], row['id'], n)}"
                         for n in range(10)}
            if relative in conflicts and \
                    self.hashes.sha256(os.path.join(self.server.root, relative)) == version.sha256:
                return None, relative
        held = self._find_copy(target, pipeline, name, version)
        if held:
            return "unrecorded", f"{held} (the ledger records {recorded or 'no location'})"
        there = self.hashes.sha256(os.path.join(self.server.root, own))
        if there is not None and there not in {v.sha256 for v in self.history[(pipeline, name)]}:
            return "differ", own
        return "missing", own

    def _check_versions_carried(self, ledger, uploads, end):
        """(1) Every version that stayed two scan intervals, or that filesync copied, is on every target of its
        pipeline under its own name or a conflict name the ledger records; Flight Review has every log."""
        problems = defaultdict(list)
        for (pipeline, name), versions in sorted(self.history.items()):
            rows = ledger.by_name.get((pipeline, self.ledger_path(pipeline, name)), [])
            copied = {row["sha256"] for row in rows if row["tasks"].get(("download", pipeline), {}).get("state") ==
                      "done"}
            carried = True
            for number, version in enumerate(versions, 1):
                if not (version.stayed(end) or version.sha256 in copied):
                    continue
                self.counts["versions_checked"] += 1
                for target in TARGETS[pipeline]:
                    problem, detail = self._where(target, pipeline, name, version, rows, uploads)
                    if problem:
                        carried = False
                        problems[problem].append(detail if problem == "web" else f"{detail} (version {number})")
            if (pipeline, name) in self.plan.odd and carried:
                self.counts["odd_names_carried"] += 1
        written = {version.sha256 for versions in self.history.values() for version in versions}
        foreign = sorted(path for path, digest in self.published.items() if digest not in written)
        self.counts["foreign_copies"] = len(foreign)
        texts = {"missing": "versions missing on an FTP target",
                 "differ": "versions differ on an FTP target (their name holds bytes of no version)",
                 "unrecorded": "versions on an FTP target only under a name the ledger does not record",
                 "web": "logs never reached Flight Review identical"}
        for problem, text in texts.items():
            if problems[problem]:
                self.failures.append(f"{len(problems[problem])} {text}: {problems[problem][:5]}")
        if foreign:
            self.failures.append(f"{len(foreign)} published files hold bytes that were never a version of a source "
                                 f"(a torn copy): {foreign[:5]}")

    def _check_removals(self, ledger, uploads):
        """(2) No source file was removed whose bytes then were not on every target (at the moment it vanished,
        and at the end through the ledger); every delete_after_upload source is removed in the end."""
        if self.deleted_early:
            self.failures.append(f"{len(self.deleted_early)} source files deleted before every target held them: "
                                 f"{self.deleted_early[:5]}")
        unheld, deletable, removed = [], 0, 0
        for (pipeline, name), versions in sorted(self.history.items()):
            if pipeline not in DELETING:
                continue
            deletable += 1
            removed += versions[-1].deleted
            rows = ledger.by_name.get((pipeline, self.ledger_path(pipeline, name)), [])
            for version in versions:
                for target in TARGETS[pipeline] if version.deleted else ():
                    problem, detail = self._where(target, pipeline, name, version, rows, uploads)
                    if problem:
                        unheld.append((name, target, problem))
        if unheld:
            self.failures.append(f"{len(unheld)} source files removed whose bytes are not on every target: "
                                 f"{unheld[:5]}")
        if removed != deletable:
            self.failures.append(f"{removed} of {deletable} delete_after_upload sources removed")

    def _check_nothing_stalled(self, ledger):
        """(3) At the end of the settle phase no task waits or runs, none is parked for a reason not expected, and
        every skipped one says why in an expected way."""
        busy, parked, skipped = [], [], []
        tasks = list(ledger.tasks())
        # a version replaced before its copy was made can go nowhere: its uploads and removal are skipped with it
        never_copied = {(row["source"], row["path"], row["version"]) for row, kind, _, task in tasks
                        if kind == "download" and task["state"] == "skipped"
                        and task["error"].startswith(EXPECTED_SKIPS["download"])}
        for row, kind, device, task in tasks:
            what = f"{row['source']}:{row['path']} v{row['version']} {kind} {device}"
            expected = EXPECTED_SKIPS.get(kind, ())
            if (row["source"], row["path"], row["version"]) in never_copied:
                expected += EXPECTED_SKIPS["download"]
            if task["state"] in ("waiting", "active"):
                busy.append(f"{what} {task['state']} ({task['error'] or 'no error'})")
            elif task["state"] == "parked" and not any(reason in task["error"] for reason in EXPECTED_PARKED):
                parked.append(f"{what}: {task['error']}")
            elif task["state"] == "skipped" and not task["error"].startswith(expected):
                skipped.append(f"{what}: {task['error']}")
        if busy:
            self.failures.append(f"stalled: {len(busy)} tasks still waiting or active at the end of the settle "
                                 f"phase: {busy[:5]}")
        if parked:
            self.failures.append(f"stalled: {len(parked)} tasks parked (a person would have to step in): "
                                 f"{parked[:5]}")
        if skipped:
            self.failures.append(f"{len(skipped)} tasks skipped for a reason not expected: {skipped[:5]}")

    def _check_never_overwritten(self):
        """(4) A published file's bytes never changed, and no name was published (RNTO) twice on FTP."""
        publications = Counter(e["path"] for e in self.server.events() if e["op"] == "RNTO")
        twice = sorted((path, count) for path, count in publications.items() if count > 1)
        self.counts.update(published=sum(publications.values()), overwritten=len(self.overwritten),
                           most_uploads_at_once_per_target=max(
                               self.server.most_stores_at_once(root.strip("/") + "/") for root in FTP_ROOTS.values()))
        if twice:
            self.failures.append(f"{len(twice)} files published more than once on FTP: {twice[:5]}")
        if self.overwritten:
            self.failures.append(f"{len(self.overwritten)} published files overwritten (their bytes changed): "
                                 f"{[path for path, _, _ in self.overwritten][:5]}")

    def _check_resent(self):
        """Bytes sent again over FTP: at most one checkpoint interval per interruption."""
        stors = defaultdict(list)
        for event in self.server.events("STOR"):
            stors[event["path"]].append(event)
        resent, sizes_sum = 0, 0
        for path in self.published:
            try:
                size = os.path.getsize(os.path.join(self.server.root, path))
            except OSError:
                continue
            try:
                part = part_name(path)
            except UnicodeEncodeError:  # not a name filesync writes (safe names are UTF-8): nothing was sent
                continue
            resent += self._written(stors.get(part, []), size) - size
            sizes_sum += size
        # what can cut an FTP upload short; unplugs, link loss and web faults touch other legs
        interruptions = self.counts["kills"] + self.counts["ftp_restarts"] + self.counts["staging_fills"]
        self.counts.update(resent_bytes=resent, interruptions=interruptions,
                           resent_bound_bytes=interruptions * CHECKPOINT, target_bytes=sizes_sum)
        if resent > interruptions * CHECKPOINT:
            self.failures.append(f"{resent} bytes sent again over FTP in {interruptions} interruptions: more than one "
                                 f"checkpoint interval ({CHECKPOINT}) each")

    def _count_content_figures(self, ledger):
        """Versions, conflict copies, removals refused because the source changed, odd names, web uploads."""
        versions = [version for versions in self.history.values() for version in versions]
        conflicts = 0
        for row, kind, device, task in ledger.tasks():
            relative = self._ftp_relative(task["location"]) if kind == "upload" and task["state"] == "done" else None
            if relative and device in FTP_ROOTS and relative != f"{FTP_ROOTS[device].lstrip('/')}/{row['path']}":
                conflicts += 1
        refused = sum(1 for _, kind, _, task in ledger.tasks()
                      if kind == "remove" and task["state"] == "skipped" and
                      any(reason in task["error"] for reason in REFUSED_REMOVALS))
        web = [(upload.sha256, upload.filename) for upload in (self.review.uploads if self.review else [])]
        end = self.ended if self.ended is not None else time.monotonic()
        self.counts.update(versions_written=len(versions), versions_stayed=sum(v.stayed(end) for v in versions),
                           ledger_versions=len(ledger.rows), conflict_copies=conflicts, removals_refused=refused,
                           odd_names=len(self.plan.odd), web_uploads=len(web),
                           web_uploads_again=len(web) - len(set(web)))

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


def scaled_faults(inject_seconds, table=None):
    """The 20-minute soak's fault (or `table`'s) counts in proportion to `inject_seconds` (it injects for 960 s)."""
    return {kind: round(count * inject_seconds / 960) for kind, count in (table or FAULTS_20_MINUTES).items()}


# The summary table: (figure, what it counts), in the order printed.
SUMMARY = [
    ("files", "source files"), ("bytes", "bytes written to sources"),
    ("versions_written", "versions the sources held"), ("versions_stayed", "  of them stayed two scan intervals"),
    ("versions_checked", "  checked on every target (stayed or copied)"), ("ledger_versions", "versions in the ledger"),
    ("rewrites", "same-size rewrites"), ("rewrites_in_place", "  of them in place"), ("appends", "appends"),
    ("appends_mid_upload", "  of them while an upload ran"), ("flickers", "versions replaced within an interval"),
    ("recreated", "names written again after their removal"), ("content_events_skipped", "content events skipped"),
    ("conflict_copies", "conflict copies (ledger locations)"), ("removals_refused", "removals refused: source changed"),
    ("deletions_seen", "source files removed by filesync"), ("deleted_mid_write", "  removed while being written"),
    ("odd_names", "odd names"), ("odd_names_carried", "  carried to every target"),
    ("published", "FTP publications (RNTO)"), ("overwritten", "published files overwritten"),
    ("foreign_copies", "published files matching no version"), ("web_uploads", "Flight Review uploads"),
    ("web_uploads_again", "  of them again"),
    ("kills", "kill -9 of a node"), ("ftp_restarts", "FTP server restarts"), ("unplugs", "drive unplugs"),
    ("drive_reads_cut", "  reads cut by an unplug"), ("link_loss_episodes", "MAVLink loss episodes"),
    ("link_loss_seconds", "  seconds lossy"), ("link_packets_lost", "  datagrams lost"),
    ("http_5xx_answered", "HTTP 5xx answered"), ("http_restarts", "Flight Review restarts"),
    ("staging_fills", "staging fills"), ("resent_bytes", "bytes sent again over FTP"),
    ("interruptions", "  interruptions (bound: one checkpoint each)"), ("settle_seconds", "seconds to settle"),
]


def summary_table(figures):
    """The figures as a two-column table: the content figures, then the faults, then anything else."""
    rows = [(text, figures[key]) for key, text in SUMMARY if key in figures]
    named = {key for key, _ in SUMMARY}
    rows += [(key, value) for key, value in sorted(figures.items()) if key not in named]
    width = max(len(text) for text, _ in rows)
    return "\n".join(f"  {text:<{width}}  {value:>12,}" if isinstance(value, int) else
                     f"  {text:<{width}}  {value:>12}" for text, value in rows)


def run_soak(workdir, seed, inject_seconds, faults, settle_seconds, files_per_second=1.0, log=print, content=None):
    """Draw the plan for `seed` with `faults` and `content` events ({kind: count}), run it and print the figures.

    Returns (figures, failures)."""
    plan = Plan.draw(seed, inject_seconds, faults, files_per_second, launch_nodes(), available_pipelines(log),
                     content)
    drops = Counter(pipeline for _, pipeline, _, _ in plan.drops)
    log(f"soak: seed {seed}; {len(plan.drops)} files ({plan.staging_bytes() / MiB:.0f} MiB staged at most; "
        f"{', '.join(f'{p} {n}' for p, n in sorted(drops.items()))}); content events: "
        f"{', '.join(f'{k} {n}' for k, n in sorted(plan.event_counts().items()))}; faults over "
        f"{inject_seconds:.0f} s: {', '.join(f'{k} {n}' for k, n in sorted(plan.fault_counts().items()))}; "
        f"workdir {workdir}")
    figures, failures = Soak(workdir, plan, settle_seconds, log).run()
    log(f"soak: figures (seed {seed})\n{summary_table(figures)}")
    log("soak: " + json.dumps(figures, sort_keys=True))
    if failures:
        log(f"soak FAILED (replay with --seed {seed}):")
        for failure in failures:
            log("  " + failure)
    else:
        log(f"soak passed (seed {seed}): {figures.get('versions_checked', 0)} versions on every target under their "
            f"own or a recorded conflict name, {figures.get('conflict_copies', 0)} conflict copies, no final name "
            f"overwritten, no source removed before its bytes were on every target "
            f"({figures.get('removals_refused', 0)} removals refused because the source changed), nothing stalled, "
            f"{figures.get('resent_bytes', 0)} bytes sent again over FTP in {figures.get('interruptions', 0)} "
            f"interruptions")
    return figures, failures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="the whole run, setup and checks included")
    parser.add_argument("--seed", type=int, default=None)
    for kind, count in {**FAULTS_20_MINUTES, **CONTENT_20_MINUTES}.items():
        parser.add_argument(f"--{kind.replace('_', '-')}", type=int, default=None, dest=kind,
                            help=f"how many {kind} events (default: {count} in 20 minutes, in proportion in less)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    settle = min(180.0, args.minutes * 15)
    inject = args.minutes * 60 - settle - min(60.0, args.minutes * 10)  # startup, teardown and the checks

    def counts(table):
        return {kind: getattr(args, kind) if getattr(args, kind) is not None else count
                for kind, count in scaled_faults(inject, table).items()}

    workdir = tempfile.mkdtemp(prefix="filesync-soak-", dir="/var/tmp")
    try:
        _, failures = run_soak(workdir, seed, inject, counts(FAULTS_20_MINUTES), settle,
                               content=counts(CONTENT_20_MINUTES))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
