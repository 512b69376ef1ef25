"""What filesync is doing, as plain data: built from the ledger's grouped counts, the transfers in progress and the
link states the workers report, with rates, ETAs and one diagnostic level per device. No ROS here: the status node
turns these into messages, and the command-line tool renders the messages with format_status().

Field names match the messages in msg/ (Status, PipelineStatus, TransferStatus, LinkStatus), so format_status() and
diagnose() take either these dataclasses or the messages.
"""
import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List

from filesync.engine.workers import Finder, TaskWorker
from filesync.ledger.store import UPLOAD

FILE_STATES = ("found", "downloading", "downloaded", "uploading", "uploaded", "removed", "failed", "skipped")
WAITING_STATES = ("found", "downloading", "downloaded", "uploading")  # not yet at every target
SOURCE, TARGET = "source", "target"
# diagnostic_msgs/DiagnosticStatus levels
OK, WARN, ERROR, STALE = 0, 1, 2, 3
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR", STALE: "STALE"}
RATE_WINDOW = 5.0  # seconds of samples behind a transfer's rate
PARKED_SHOWN = 100  # parked files listed on the status with their reasons (the count covers all of them)
KiB, MiB = 1 << 10, 1 << 20


@dataclass
class TransferStatus:
    """One transfer in progress."""
    file_id: int
    source: str
    path: str
    kind: str
    device: str
    bytes_done: int
    bytes_total: int
    rate: float = 0.0
    eta: float = -1.0
    worker: str = ""
    version: int = 1


@dataclass
class LinkStatus:
    """Whether a source or target answers, and since when (wall-clock seconds)."""
    name: str
    role: str
    up: bool = True
    since: float = 0.0
    reason: str = ""
    reported: bool = True
    last_location: str = ""  # where this target last published a file (a URL for web targets)
    last_location_time: float = 0.0
    fault: bool = False  # down because it answers wrongly (a failing listing, a bug of the link), not out of reach
    verified_by: str = ""  # a target's Target.verified_by: how its published copies are checked


@dataclass
class ParkedFile:
    """A file with a parked task, as the ledger holds it: it waits for a person (retry or forget)."""
    file_id: int
    source: str
    path: str
    size: int = 0
    reason: str = ""
    devices: List[str] = field(default_factory=list)  # where its tasks are parked: "target ftp", "source usb"
    version: int = 1


def parked_file(record) -> ParkedFile:
    """A ParkedFile of a failed ledger record (a FileRecord or its message): its reason is the record's error."""
    devices = [f"{TARGET if task.kind == UPLOAD else SOURCE} {task.device}" for task in record.tasks
               if task.state == "parked"]
    return ParkedFile(record.id, record.source, record.path, record.size, record.error, devices,
                      getattr(record, "version", 1) or 1)


def shown_path(path, version) -> str:
    """A file's path for people, with its version where an earlier one of the same name exists."""
    return f"{path} [version {version}]" if version and version > 1 else path


@dataclass
class PipelineStatus:
    """One pipeline's files per state and what is left to move."""
    source: str
    targets: List[str]
    found: int = 0
    downloading: int = 0
    downloaded: int = 0
    uploading: int = 0
    uploaded: int = 0
    removed: int = 0
    failed: int = 0
    skipped: int = 0
    files_waiting: int = 0
    bytes_waiting: int = 0
    rate: float = 0.0


@dataclass
class WorkerReport:
    """What one worker process is doing: its transfers, the links it sees, why downloads wait, its last error."""
    node: str
    transfers: List[TransferStatus] = field(default_factory=list)
    links: List[LinkStatus] = field(default_factory=list)
    downloads_held: str = ""
    last_error: str = ""
    last_error_time: float = 0.0


@dataclass
class Status:
    """The whole picture, published about once a second."""
    stamp: float
    pipelines: List[PipelineStatus]
    transfers: List[TransferStatus]
    links: List[LinkStatus]
    rate: float = 0.0
    bytes_waiting: int = 0
    staging_free_bytes: int = 0
    staging_min_free_bytes: int = 0
    downloads_held: str = ""
    ledger_ok: bool = True
    ledger_error: str = ""  # the ledger answers but cannot be opened or written (locked, read-only, disk full)
    last_error: str = ""
    last_error_time: float = 0.0  # 0 with a last_error: it came from the ledger, which keeps no time
    rate_kib_s: float = 0.0  # the rate and what is left to move in units that read well on a plot
    bytes_to_move: int = 0  # bytes_waiting less what the transfers in progress already moved
    mib_to_move: float = 0.0
    files_parked: int = 0
    parked: List[ParkedFile] = field(default_factory=list)  # the first PARKED_SHOWN, from the ledger


class LastError(logging.Handler):
    """A logging handler that keeps the last warning or error (one line) and its wall-clock time; notify() hears of
    each one."""

    def __init__(self, level=logging.WARNING, clock=time.time):
        super().__init__(level)
        self._clock = clock
        self.message, self.time = "", 0.0
        self.notify = lambda: None

    def emit(self, record):
        self.message = (record.getMessage().splitlines() or [""])[0]
        self.time = self._clock()
        self.notify()


class ReportPacer:
    """When a worker node sends its WorkerReport: soon after something in it changed (the loops and the LastError
    handler call notify()), every `period` while a transfer moves, and every `idle_period` as a heartbeat otherwise.

    Between those it sleeps on an event, so an idle node does not wake each second to look for changes. Changes close
    together are sent as one report, at most one each `period` (a scan that registers a thousand files is one report).
    """

    def __init__(self, build, send, period, idle_period, clock=time.monotonic):
        self.build, self.send = build, send
        self.period, self.idle_period = period, idle_period
        self._clock = clock
        self._changed = threading.Event()
        self._stopped = threading.Event()
        self.looks = 0  # reports built (compared with the last one sent), for tests

    def notify(self):
        """Something a report shows has changed."""
        self._changed.set()

    def stop(self):
        """End run()."""
        self._stopped.set()
        self._changed.set()

    def run(self):
        """Build, compare and send reports until stop()."""
        last, sent_at, looked_at = None, None, None
        while not self._stopped.is_set():
            if looked_at is not None:  # at most one look per period, however many changes came in between
                self._stopped.wait(max(0.0, self.period - (self._clock() - looked_at)))
                if self._stopped.is_set():
                    return
            self._changed.clear()  # a change from here on is seen by the next look
            current = self.build()
            self.looks += 1
            looked_at = self._clock()
            if current.transfers or current != last or sent_at is None or looked_at - sent_at >= self.idle_period:
                self.send(current)
                last, sent_at = current, looked_at
            if not current.transfers:
                self._changed.wait(max(0.0, self.idle_period - (self._clock() - sent_at)))


def worker_report(node, loops, last_error=None) -> WorkerReport:
    """A WorkerReport of the loops of one process (finders and task workers), read without locks: a snapshot."""
    report = WorkerReport(node=node)
    for loop in loops:
        if isinstance(loop, TaskWorker):
            role = TARGET if loop.kind == UPLOAD else SOURCE
            report.links.append(_loop_link(loop, loop.device.name, role, last_location=loop.last_location[0],
                                           last_location_time=loop.last_location[1],
                                           verified_by=loop.device.verified_by if role == TARGET else ""))
            job = loop.current
            if job is not None:
                report.transfers.append(TransferStatus(job.record.id, job.record.source, job.record.path, loop.kind,
                                                       loop.device.name, job.done, job.record.size,
                                                       worker=loop.worker, version=job.record.version))
            if loop.held_back:
                report.downloads_held = loop.held_back
        elif isinstance(loop, Finder):
            report.links.append(_loop_link(loop, loop.source.name, SOURCE))
    if last_error is not None:
        report.last_error, report.last_error_time = last_error.message, last_error.time
    return report


def _loop_link(loop, name, role, **extra) -> LinkStatus:
    """The device's link as `loop` sees it; a loop whose steps fail over and over shows it down with the reason, as a
    fault (ERROR on /diagnostics), whatever the device answers: its work does not get done."""
    failing = loop.failing()
    if failing:
        return LinkStatus(name, role, False, loop.failing_since, failing, fault=True, **extra)
    return LinkStatus(name, role, loop.link.up, loop.link.since, loop.link.reason, fault=loop.link.fault, **extra)


class RateMeter:
    """Bytes per second over the last `window` seconds of (time, bytes done) samples."""

    def __init__(self, window=RATE_WINDOW):
        self.window = window
        self.samples = collections.deque()

    def add(self, now, done) -> float:
        """Add a sample; return the rate (0 until two samples span some time)."""
        if self.samples and done < self.samples[-1][1]:
            self.samples.clear()  # started again from a checkpoint
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()
        (first_time, first_done), (last_time, last_done) = self.samples[0], self.samples[-1]
        return (last_done - first_done) / (last_time - first_time) if last_time > first_time else 0.0


class StatusBuilder:
    """Combines counts, reports and staging space into a Status; keeps a rate meter per running transfer."""

    def __init__(self, config):
        self.config = config
        self._meters: Dict[tuple, RateMeter] = {}
        self._lock = threading.Lock()

    def devices(self):
        """(role, name) of every source and target the pipelines use, in a stable order."""
        sources = sorted({p.source for p in self.config.pipelines})
        targets = sorted({t for p in self.config.pipelines for t in p.targets})
        return [(SOURCE, name) for name in sources] + [(TARGET, name) for name in targets]

    def build(self, counts, reports, staging_free, now=None, ledger_ok=True, parked=(), ledger_error="",
              to_copy=None, moving=None) -> Status:
        """counts: {(source, state): (files, bytes)} (Ledger.counts()); reports: the live WorkerReports; parked: the
        ParkedFiles the ledger holds (their reasons stay shown after a restart, when no worker remembers them);
        to_copy: {source: bytes} of the downloads and uploads still to make (Ledger.bytes_to_copy()), from which
        bytes_to_move is counted (without it, from bytes_waiting); moving: {(file_id, kind, device)} of the copies
        the ledger has under way (Ledger.copies_under_way()), the only ones whose reported progress counts."""
        now = time.time() if now is None else now
        with self._lock:
            transfers = self._transfers(reports, now)
        pipelines = []
        for pipeline in self.config.pipelines:
            entry = PipelineStatus(pipeline.source, list(pipeline.targets))
            for state in FILE_STATES:
                files, size = counts.get((pipeline.source, state), (0, 0))
                setattr(entry, state, files)
                if state in WAITING_STATES:
                    entry.files_waiting += files
                    entry.bytes_waiting += size
            entry.rate = sum(t.rate for t in transfers if t.source == pipeline.source)
            pipelines.append(entry)
        errors = [(r.last_error_time, r.last_error) for r in reports if r.last_error]
        last_error_time, last_error = max(errors) if errors else (0.0, "")
        parked = list(parked)
        if not last_error and parked:  # nothing went wrong since the workers started: the ledger still knows
            newest = max(parked, key=lambda p: p.file_id)
            last_error = f"parked {newest.source}/{newest.path}: {newest.reason}"
        to_move = 0
        for pipeline in pipelines:
            # progress within a file counts, and each copy once: a 300 MB file with one target is 600 MB to move when
            # found, goes down as it downloads, and on as it uploads (counted from bytes_waiting alone, it fell to 0
            # at the end of the download and jumped back to 300 MB when the upload began)
            # and a report may be older than the ledger's figures: a download the ledger counts done (no longer in
            # to_copy) that a worker still reports at 100 % moved nothing more (counted, it made the figure 0 for
            # one sample at the hand-over to the upload)
            legs = pipeline.bytes_waiting if to_copy is None else to_copy.get(pipeline.source, 0)
            moved = sum(t.bytes_done for t in transfers if t.source == pipeline.source and
                        (moving is None or (t.file_id, t.kind, t.device) in moving))
            to_move += max(0, legs - moved)
        rate = sum(t.rate for t in transfers)
        return Status(stamp=now, pipelines=pipelines, transfers=transfers, links=self._links(reports),
                      rate=rate, bytes_waiting=sum(p.bytes_waiting for p in pipelines),
                      staging_free_bytes=staging_free, staging_min_free_bytes=self.config.staging_min_free_bytes,
                      downloads_held=next((r.downloads_held for r in reports if r.downloads_held), ""),
                      ledger_ok=ledger_ok, ledger_error=ledger_error, last_error=last_error, last_error_time=last_error_time,
                      rate_kib_s=rate / KiB, bytes_to_move=to_move, mib_to_move=to_move / MiB,
                      files_parked=sum(p.failed for p in pipelines), parked=parked[:PARKED_SHOWN])

    def _transfers(self, reports, now):
        running = []
        for report in reports:
            for transfer in report.transfers:
                key = (transfer.file_id, transfer.kind, transfer.device)
                meter = self._meters.setdefault(key, RateMeter())
                rate = meter.add(now, transfer.bytes_done)
                left = transfer.bytes_total - transfer.bytes_done
                eta = left / rate if rate > 0 else (0.0 if left <= 0 else -1.0)
                running.append(TransferStatus(transfer.file_id, transfer.source, transfer.path, transfer.kind,
                                              transfer.device, transfer.bytes_done, transfer.bytes_total, rate, eta,
                                              transfer.worker, transfer.version))
        live = {(t.file_id, t.kind, t.device) for t in running}
        for key in list(self._meters):
            if key not in live:
                del self._meters[key]
        return sorted(running, key=lambda t: (t.kind, t.device, t.file_id))

    def _links(self, reports):
        seen = collections.defaultdict(list)
        for report in reports:
            for link in report.links:
                seen[(link.role, link.name)].append(link)
        merged = []
        for role, name in self.devices():
            views = seen.get((role, name))
            if not views:
                merged.append(LinkStatus(name, role, up=True, since=0.0, reported=False))
                continue
            latest = max(views, key=lambda v: v.last_location_time)
            down = [v for v in views if not v.up]
            if down:  # one worker that failed to reach it outweighs others that have not tried lately
                first = min(down, key=lambda v: (not v.fault, v.since))  # a fault says more than a timeout
                link = LinkStatus(name, role, False, first.since, first.reason, fault=first.fault)
            else:
                link = LinkStatus(name, role, True, max(v.since for v in views))
            link.last_location, link.last_location_time = latest.last_location, latest.last_location_time
            link.verified_by = next((v.verified_by for v in views if v.verified_by), "")
            merged.append(link)
        return merged


@dataclass
class Diagnosis:
    """One diagnostic status: a name, a level (OK, WARN, ERROR, STALE), a one-line message and key/values."""
    name: str
    level: int
    message: str
    values: Dict[str, str] = field(default_factory=dict)


def diagnose(status, parked, warn_after, now=None) -> List[Diagnosis]:
    """One Diagnosis per source and target, one for staging and one for the ledger.

    parked: {(role, device): files with a task parked there}. A source that is not reachable is WARN at once (a drive
    not plugged in); a target only after `warn_after` seconds (short outages are normal on a radio link). A device
    that answers but cannot serve (a listing that fails, a known bug of the link), parked files on a device and a
    staging disk under its floor are ERROR.
    """
    now = time.time() if now is None else now
    results = []
    for link in status.links:
        name = f"{link.role} {link.name}"
        files_parked = parked.get((link.role, link.name), 0)
        moving = [t for t in status.transfers if t.device == link.name and (t.kind == UPLOAD) == (link.role == TARGET)]
        values = {"reachable": str(link.up).lower(), "since": _clock_time(link.since), "parked files": str(files_parked),
                  "transfers": str(len(moving)), "rate (bytes/s)": f"{sum(t.rate for t in moving):.0f}"}
        if link.verified_by:
            values["verified by"] = link.verified_by
        if not link.reported:
            level, message = STALE, "no running node uses it"
        elif link.up:
            level, message = OK, "reachable"
        else:
            down_for = max(0.0, now - link.since)
            late = link.role == SOURCE or down_for >= warn_after
            level = ERROR if link.fault else WARN if late else OK
            state = "failing" if link.fault else "unreachable"  # a fault answers, but nothing gets done
            message = f"{state} for {down_for:.0f} s: {link.reason}" if link.reason else f"{state} for {down_for:.0f} s"
            values["reason"] = link.reason
        if files_parked:
            level = ERROR
            message = f"{files_parked} file(s) parked (filesync ls failed; filesync retry ID); {message}"
        results.append(Diagnosis(name, level, message, values))
    floor = status.staging_min_free_bytes
    values = {"free bytes": str(status.staging_free_bytes), "floor bytes": str(floor)}
    if floor and status.staging_free_bytes < floor:
        results.append(Diagnosis("staging", ERROR, status.downloads_held or
                                 f"full: {human_bytes(status.staging_free_bytes)} free, under the floor of "
                                 f"{human_bytes(floor)}; downloads wait", values))
    else:
        results.append(Diagnosis("staging", OK, f"{human_bytes(status.staging_free_bytes)} free", values))
    if status.ledger_error:
        results.append(Diagnosis("ledger", ERROR, f"{status.ledger_error}; transfers wait, nothing is lost"))
    elif status.ledger_ok:
        waiting = sum(p.files_waiting for p in status.pipelines)
        results.append(Diagnosis("ledger", OK, f"{waiting} file(s) waiting, {human_bytes(status.bytes_waiting)}",
                                 {"files waiting": str(waiting), "bytes waiting": str(status.bytes_waiting)}))
    else:
        results.append(Diagnosis("ledger", ERROR, "the ledger does not answer"))
    return results


def _clock_time(stamp):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "-"


def human_bytes(count) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def human_seconds(seconds) -> str:
    """ETA text: '-' when unknown, else like '42s', '3m05s', '2h10m'."""
    if seconds < 0:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_bar(done, total, width=20) -> str:
    """'[#########-----------]  45%'."""
    fraction = 1.0 if total <= 0 else min(1.0, max(0.0, done / total))
    filled = int(round(fraction * width))
    return f"[{'#' * filled}{'-' * (width - filled)}] {fraction * 100:3.0f}%"


def link_text(link, now) -> str:
    """'up', 'unknown (no node uses it)' or 'DOWN for 3m05s: why'."""
    if not link.reported:
        return "unknown (no node uses it)"
    if link.up:
        return "up"
    return f"DOWN for {human_seconds(max(0.0, now - link.since))}: {link.reason}"


def status_view(status, now=None) -> dict:
    """The status shaped for people, as plain JSON-able data: the terminal view, the rqt widget and the browser page
    all render this one shape (numbers for bars and sorting, texts with units for reading)."""
    now = time.time() if now is None else now
    pipelines = [{
        "source": p.source, "targets": list(p.targets),
        "counts": ", ".join(f"{state} {getattr(p, state)}" for state in FILE_STATES if getattr(p, state)) or "no files",
        "files_waiting": p.files_waiting, "bytes_waiting": p.bytes_waiting,
        "waiting": f"{p.files_waiting} file(s), {human_bytes(p.bytes_waiting)}", "rate": f"{human_bytes(p.rate)}/s",
        "failed": p.failed,
    } for p in status.pipelines]
    transfers = []
    for t in status.transfers:
        fraction = 1.0 if t.bytes_total <= 0 else min(1.0, max(0.0, t.bytes_done / t.bytes_total))
        transfers.append({
            "file_id": t.file_id, "kind": t.kind, "device": t.device, "source": t.source,
            "path": shown_path(t.path, t.version),
            "bytes_done": t.bytes_done, "bytes_total": t.bytes_total, "percent": round(fraction * 100, 1),
            "bar": progress_bar(t.bytes_done, t.bytes_total),
            "amount": f"{human_bytes(t.bytes_done)}/{human_bytes(t.bytes_total)}",
            "rate": f"{human_bytes(t.rate)}/s", "eta": human_seconds(t.eta)})
    links = [{"role": link.role, "name": link.name,
              "state": "unknown" if not link.reported else ("up" if link.up else "down"),
              "text": link_text(link, now), "since": _clock_time(link.since), "reason": link.reason,
              "last_location": link.last_location} for link in status.links]
    parked = [{"file_id": p.file_id, "source": p.source, "path": shown_path(p.path, p.version),
               "size": human_bytes(p.size),
               "reason": p.reason, "devices": ", ".join(p.devices)} for p in getattr(status, "parked", [])]
    staging = f"{human_bytes(status.staging_free_bytes)} free"
    if status.staging_min_free_bytes:
        staging += f" (floor {human_bytes(status.staging_min_free_bytes)})"
    return {
        "stamp": status.stamp if hasattr(status, "stamp") else status.header.stamp.to_sec(),  # dataclass or message
        "ledger_ok": bool(status.ledger_ok), "ledger_problem": ledger_problem(status), "pipelines": pipelines, "transfers": transfers, "links": links,
        "parked": parked, "files_parked": int(getattr(status, "files_parked", 0)),
        "staging": staging,
        "staging_low": bool(status.staging_min_free_bytes and status.staging_free_bytes < status.staging_min_free_bytes),
        "downloads_held": status.downloads_held,
        "rate": f"{human_bytes(status.rate)}/s",
        "to_move": human_bytes(getattr(status, "bytes_to_move", status.bytes_waiting)),
        "last_error": status.last_error,
        "last_error_when": _clock_time(status.last_error_time) if status.last_error_time else "from the ledger",
    }


def ledger_problem(status) -> str:
    """What is wrong with the ledger, for people ('' when nothing)."""
    if getattr(status, "ledger_error", ""):
        return f"{status.ledger_error} (transfers wait; nothing is lost)"
    return "" if status.ledger_ok else "NOT ANSWERING (counts may be old)"


def format_status(status, now=None, width=100) -> str:
    """The status as text for a terminal: pipelines, transfers with a progress bar, links, staging, last error."""
    view = status_view(status, now)
    lines = []
    if view["ledger_problem"]:
        lines.append(f"ledger: {view['ledger_problem']}")
    for pipeline in view["pipelines"]:
        lines.append(f"{pipeline['source']} -> {', '.join(pipeline['targets'])}: {pipeline['counts']}")
        lines.append(f"  waiting {pipeline['waiting']}; rate {pipeline['rate']}")
    if view["transfers"]:
        lines.append("transfers:")
        for transfer in view["transfers"]:
            label = f"  {transfer['kind']:8} {transfer['device']}: {transfer['path']}"
            if len(label) > width - 55:
                label = label[:width - 58] + "..."
            lines.append(f"{label:<{max(20, width - 55)}} {transfer['bar']} {transfer['amount']} "
                         f"{transfer['rate']} eta {transfer['eta']}")
    else:
        lines.append("transfers: none")
    if view["parked"]:
        lines.append(f"parked: {view['files_parked']} file(s) (filesync retry ID)")
        for parked in view["parked"]:
            lines.append(f"  {parked['file_id']:>6} {parked['source']}/{parked['path']}: {parked['reason']}")
    lines.append("links:")
    for link in view["links"]:
        state = link["text"]
        if link["last_location"]:
            state += f"; last published {link['last_location']}"
        lines.append(f"  {link['role']} {link['name']}: {state}")
    lines.append(f"staging: {view['staging']}")
    if view["downloads_held"]:
        lines.append(view["downloads_held"])
    if view["last_error"]:
        lines.append(f"last error ({view['last_error_when']}): {view['last_error']}")
    return "\n".join(lines)


def apply_event(view, event) -> bool:
    """Bring a status_view() up to date with a FileEvent (or anything with its fields) before the next status: a
    file just parked shows with its reason, a parked file that was retried or forgotten leaves the list.
    True when the view changed."""
    parked = view["parked"]
    index = next((i for i, p in enumerate(parked) if p["file_id"] == event.file_id), None)
    if event.state == "failed":
        entry = {"file_id": event.file_id, "source": event.source,
                 "path": shown_path(event.path, getattr(event, "version", 1)), "size": human_bytes(event.size),
                 "reason": event.error, "devices": f"{TARGET if event.task == UPLOAD else SOURCE} {event.device}"
                 if event.device else ""}
        if index is None:
            parked.append(entry)
            view["files_parked"] += 1
        elif parked[index] == entry:
            return False
        else:
            parked[index] = entry
        return True
    if index is None:
        return False
    del parked[index]
    view["files_parked"] = max(0, view["files_parked"] - 1)
    return True
