"""The status library: counts per pipeline, bytes waiting, rates and ETAs, merged link states, diagnostic levels, the
text view; and a worker report taken from real loops while a real transfer runs (LocalRunner, real FTP server)."""
import logging
import os
import threading
import time
from types import SimpleNamespace

import pytest

from conftest import write_file
from filesync.config import load_config
from filesync.devices.folder import FolderSource
from filesync.engine.runner import LocalRunner
from filesync.engine.workers import Finder
from filesync.errors import ConfigError
from filesync.status import (ERROR, OK, SOURCE, STALE, TARGET, WARN, LastError, LinkStatus, RateMeter, ReportPacer,
                             StatusBuilder, TransferStatus, WorkerReport, diagnose, format_status, human_bytes,
                             human_seconds, progress_bar, worker_report)

MiB = 1 << 20


def config(**extra):
    raw = {"sources": {"inbox": {"kind": "folder", "path": "/tmp/in"}, "usb": {"kind": "folder", "path": "/tmp/u"}},
           "targets": {"ftp": {"kind": "ftp", "host": "127.0.0.1"}, "web": {"kind": "ftp", "host": "127.0.0.1"}},
           "pipelines": [{"source": "inbox", "targets": ["ftp"]}, {"source": "usb", "targets": ["ftp", "web"]}],
           "staging_min_free_bytes": 1000}
    raw.update(extra)
    return load_config(raw)


def test_counts_and_bytes_waiting_per_pipeline():
    counts = {("inbox", "found"): (3, 300), ("inbox", "uploading"): (1, 50), ("inbox", "uploaded"): (10, 10_000),
              ("inbox", "failed"): (2, 7), ("usb", "downloading"): (1, 4000), ("usb", "skipped"): (1, 1)}
    status = StatusBuilder(config()).build(counts, [], staging_free=5000, now=100.0)
    inbox, usb = status.pipelines
    assert (inbox.source, inbox.targets, usb.targets) == ("inbox", ["ftp"], ["ftp", "web"])
    assert (inbox.found, inbox.uploading, inbox.uploaded, inbox.failed, inbox.downloading) == (3, 1, 10, 2, 0)
    assert (inbox.files_waiting, inbox.bytes_waiting) == (4, 350)  # failed and uploaded files wait for nothing
    assert (usb.files_waiting, usb.bytes_waiting, usb.skipped) == (1, 4000, 1)
    assert status.bytes_waiting == 4350
    assert (status.staging_free_bytes, status.staging_min_free_bytes) == (5000, 1000)


def test_rate_and_eta_from_successive_reports():
    builder = StatusBuilder(config())

    def report(done):
        return WorkerReport("up", transfers=[TransferStatus(7, "inbox", "a.bin", "upload", "ftp", done, 10_000)])

    first = builder.build({}, [report(1000)], 0, now=10.0).transfers[0]
    assert (first.rate, first.eta) == (0.0, -1.0)  # one sample: no rate yet
    second = builder.build({}, [report(3000)], 0, now=12.0)
    transfer = second.transfers[0]
    assert transfer.rate == pytest.approx(1000.0)
    assert transfer.eta == pytest.approx(7.0)
    assert second.rate == pytest.approx(1000.0) and second.pipelines[0].rate == pytest.approx(1000.0)
    assert second.pipelines[1].rate == 0.0
    # a transfer that ended and started again (resumed from a checkpoint) does not get a negative rate
    restarted = builder.build({}, [report(500)], 0, now=13.0).transfers[0]
    assert restarted.rate == 0.0
    assert builder.build({}, [], 0, now=14.0).transfers == [] and not builder._meters


def test_rate_meter_forgets_samples_older_than_its_window():
    meter = RateMeter(window=5.0)
    for second in range(10):  # 100 B/s, then 1000 B/s
        meter.add(float(second), second * 100)
    for second in range(10, 20):
        rate = meter.add(float(second), 900 + (second - 9) * 1000)
    assert rate == pytest.approx(1000.0)


def test_links_merge_down_wins_and_unreported_devices_are_marked():
    builder = StatusBuilder(config())
    reports = [WorkerReport("finder", links=[LinkStatus("inbox", SOURCE, True, 50.0),
                                             LinkStatus("usb", SOURCE, False, 40.0, "no drive")]),
               WorkerReport("downloader", links=[LinkStatus("inbox", SOURCE, True, 60.0),
                                                 LinkStatus("usb", SOURCE, True, 10.0)]),
               WorkerReport("uploader", links=[LinkStatus("ftp", TARGET, False, 90.0, "refused")],
                            last_error="upload x: refused", last_error_time=91.0, downloads_held="")]
    status = builder.build({}, reports, 0, now=100.0)
    links = {(link.role, link.name): link for link in status.links}
    assert [(link.role, link.name) for link in status.links] == [(SOURCE, "inbox"), (SOURCE, "usb"),
                                                                  (TARGET, "ftp"), (TARGET, "web")]
    assert links[(SOURCE, "inbox")].up and links[(SOURCE, "inbox")].since == 60.0
    assert not links[(SOURCE, "usb")].up and links[(SOURCE, "usb")].reason == "no drive"
    assert not links[(TARGET, "ftp")].up and links[(TARGET, "ftp")].since == 90.0
    assert not links[(TARGET, "web")].reported
    assert (status.last_error, status.last_error_time) == ("upload x: refused", 91.0)


def test_diagnostic_levels():
    builder = StatusBuilder(config(staging_min_free_bytes=1000))
    reports = [WorkerReport("w", links=[LinkStatus("inbox", SOURCE, True, 0.0), LinkStatus("usb", SOURCE, False, 95.0,
                                                                                          "no drive"),
                                        LinkStatus("ftp", TARGET, False, 95.0, "refused"),
                                        LinkStatus("web", TARGET, False, 40.0, "timed out")],
                            downloads_held="downloads wait: staging has 10 bytes free")]
    status = builder.build({}, reports, staging_free=10, now=100.0)
    levels = {d.name: d for d in diagnose(status, {(SOURCE, "inbox"): 2}, warn_after=30.0, now=100.0)}
    assert levels["source inbox"].level == ERROR and "2 file(s) parked" in levels["source inbox"].message
    assert levels["source usb"].level == WARN  # a source that is not there warns at once
    assert levels["target ftp"].level == OK and "unreachable for 5 s" in levels["target ftp"].message
    assert levels["target web"].level == WARN and "timed out" in levels["target web"].message
    assert levels["staging"].level == ERROR and "downloads wait" in levels["staging"].message
    assert levels["ledger"].level == OK
    status = builder.build({}, [], staging_free=5000, now=100.0, ledger_ok=False)
    levels = {d.name: d for d in diagnose(status, {}, warn_after=30.0, now=100.0)}
    assert levels["staging"].level == OK and levels["ledger"].level == ERROR
    assert levels["target web"].level == STALE


def test_text_view_has_counts_progress_links_and_last_error():
    builder = StatusBuilder(config())
    report = WorkerReport("up", transfers=[TransferStatus(7, "inbox", "day1/a.bin", "upload", "ftp", 0, 4 * MiB)],
                          links=[LinkStatus("usb", SOURCE, False, 70.0, "no drive")],
                          last_error="upload day1/a.bin: 421 busy", last_error_time=time.time())
    builder.build({}, [report], 0, now=10.0)
    report.transfers[0].bytes_done = MiB
    status = builder.build({("inbox", "uploading"): (1, 4 * MiB), ("inbox", "failed"): (1, 5)}, [report],
                           3 * 1 << 30, now=11.0)
    text = format_status(status, now=100.0)
    assert "inbox -> ftp: uploading 1, failed 1" in text
    assert "waiting 1 file(s), 4.0 MiB" in text
    assert "day1/a.bin" in text and "[#####---------------]  25%" in text and "1.0 MiB/4.0 MiB" in text
    assert "1.0 MiB/s eta 3s" in text
    assert "source usb: DOWN for 30s: no drive" in text
    assert "target web: unknown" in text
    assert "staging: 3.0 GiB free (floor 1000 B)" in text
    assert "last error (" in text and "421 busy" in text


def test_formatting_helpers():
    assert human_bytes(0) == "0 B" and human_bytes(1536) == "1.5 KiB" and human_bytes(5 * 1 << 40) == "5.0 TiB"
    assert human_seconds(-1) == "-" and human_seconds(42) == "42s" and human_seconds(185) == "3m05s"
    assert human_seconds(7800) == "2h10m"
    assert progress_bar(0, 0) == "[####################] 100%"
    assert progress_bar(5, 10, width=10) == "[#####-----]  50%"


def test_last_error_handler_keeps_the_last_warning_line():
    handler = LastError(clock=lambda: 42.0)
    logger = logging.getLogger("filesync.test_status")
    logger.addHandler(handler)
    try:
        logger.info("not an error")
        assert handler.message == ""
        logger.warning("first\nsecond line")
        assert (handler.message, handler.time) == ("first", 42.0)
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("key, value, message", [
    ("staging_min_free_bytes", -1, "staging_min_free_bytes: must be 0 or more"),
    ("retention", "sometimes", "retention: 'sometimes' is not one of keep, uploaded"),
    ("unreachable_warn_seconds", "soon", "unreachable_warn_seconds: expected a number"),
    ("log_max_bytes", 0, "log_max_bytes: must be above 0"),
    ("log_backup_count", -2, "log_backup_count: must be 0 or more"),
    ("ros_log_max_total_bytes", 0, "ros_log_max_total_bytes: must be above 0"),
])
def test_bad_status_settings_name_the_key(key, value, message):
    with pytest.raises(ConfigError) as error:
        config(**{key: value})
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_worker_report_of_real_loops_during_a_real_transfer(tmp_path, ftp_server):
    """A slow (bwlimit) transfer through LocalRunner: the report names it with its live byte count."""
    write_file(str(tmp_path / "inbox" / "slow.bin"), 3 * MiB)
    runner = LocalRunner({"staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
                          "checkpoint_bytes": 256 * 1024, "scan_interval": 0.5, "poll_interval": 1.0,
                          "bwlimit": MiB,
                          "sources": {"inbox": {"kind": "folder", "path": str(tmp_path / "inbox"), "min_age": 0.0}},
                          "targets": {"ftp": ftp_server.target_options("/in")},
                          "pipelines": [{"source": "inbox", "targets": ["ftp"]}]})
    builder = StatusBuilder(runner.config)
    seen = []
    try:
        runner.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            report = worker_report("local", runner.loops)
            status = builder.build(runner.ledger.counts(), [report], 0)
            seen += [(t.kind, t.bytes_done, t.bytes_total, t.rate) for t in status.transfers]
            if status.pipelines[0].uploaded == 1:
                break
            time.sleep(0.25)
        runner.run_until_settled(timeout=60)
        # where the upload landed reaches the status (for Flight Review, the log's URL)
        final = builder.build(runner.ledger.counts(), [worker_report("local", runner.loops)], 0)
        ftp_link = next(link for link in final.links if link.name == "ftp")
        assert ftp_link.last_location == f"ftp://127.0.0.1:{ftp_server.port}/in/slow.bin"
        assert ftp_link.last_location_time > 0
        assert f"last published ftp://127.0.0.1:{ftp_server.port}/in/slow.bin" in format_status(final)
    finally:
        runner.close()
    kinds = {kind for kind, _, _, _ in seen}
    assert kinds == {"download", "upload"}, seen
    partial = [done for _, done, total, _ in seen if 0 < done < total]
    assert partial and all(total == 3 * MiB for _, _, total, _ in seen)
    assert any(rate > 0 for _, _, _, rate in seen)
    assert os.path.getsize(os.path.join(ftp_server.root, "in", "slow.bin")) == 3 * MiB


def test_the_rqt_perspective_plots_plain_number_fields_of_the_status():
    """config/filesync.perspective: the filesync plugin, two plots, robot monitor; every plotted field is a number
    field of msg/Status.msg (rqt_plot plots only numbers). test_perspective.py checks the rest of the file."""
    import ast
    import json
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    with open(os.path.join(root, "config", "filesync.perspective"), encoding="utf-8") as handle:
        manager = json.load(handle)["groups"]["pluginmanager"]
    running = ast.literal_eval(manager["keys"]["running-plugins"]["repr"])
    assert running == {"filesync/Filesync": [1], "rqt_plot/Plot": [1, 2], "rqt_robot_monitor/RobotMonitor": [1]}
    fields = {}
    with open(os.path.join(root, "msg", "Status.msg"), encoding="utf-8") as handle:
        for line in handle:
            words = line.split("#")[0].split()
            if len(words) == 2:
                fields[words[1]] = words[0]
    plotted = [topic for serial in (1, 2) for topic in ast.literal_eval(
        manager["groups"][f"plugin__rqt_plot__Plot__{serial}"]["groups"]["plugin"]["keys"]["topics"]["repr"])]
    assert plotted == ["/filesync/status/rate_kib_s", "/filesync/status/mib_to_move"]
    for topic in plotted:
        assert fields[topic.rsplit("/", 1)[1]] in ("float64", "uint64")


def _wait_until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.01)


def test_report_pacer_sends_a_change_of_a_real_loop_and_does_not_look_while_idle(tmp_path):
    """An idle worker node sleeps until its loops say something changed (here: the source's folder is missing)."""
    source = FolderSource("inbox", {"kind": "folder", "path": str(tmp_path / "missing")}, "sources.inbox")
    finder = Finder(source, SimpleNamespace(targets=["ftp"], delete_after_upload=False), None,
                    SimpleNamespace(scan_interval=10.0))
    sent = []
    pacer = ReportPacer(lambda: worker_report("finder", [finder]), sent.append, period=0.05, idle_period=3600)
    finder.notify = pacer.notify
    thread = threading.Thread(target=pacer.run, daemon=True)
    thread.start()
    try:
        _wait_until(lambda: len(sent) == 1)
        assert sent[0].links[0].up
        time.sleep(0.5)
        assert pacer.looks == 1  # nothing changed: no second look (a 1 s timer would have looked again by now)
        finder.step()  # the listing fails: the link goes down and the loop says so
        _wait_until(lambda: len(sent) == 2)
        assert not sent[1].links[0].up and "does not exist" in sent[1].links[0].reason
        looks = pacer.looks
        for _ in range(1000):  # a burst of changes is one look, not a thousand
            pacer.notify()
        time.sleep(0.5)
        assert pacer.looks - looks <= 2
    finally:
        pacer.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_a_loop_whose_steps_fail_over_and_over_is_an_error_on_the_diagnostics_with_the_reason(tmp_path, caplog):
    """A loop that fails every step (the workers did so on a ledger connection rospy had closed: AttributeError at
    each poll) shows its device down as a fault with the reason and the count, so /diagnostics says ERROR and why,
    not only 'step failed' in a log. The traceback is logged once; a step that works again clears it."""
    from filesync.ledger.recovery import open_ledger
    write_file(str(tmp_path / "inbox" / "a.bin"), 10)
    source = FolderSource("inbox", {"kind": "folder", "path": str(tmp_path / "inbox"), "min_age": 0.0},
                          "sources.inbox")
    finder = Finder(source, SimpleNamespace(targets=["ftp"], delete_after_upload=False), None,
                    SimpleNamespace(scan_interval=0.01))  # no ledger at all: every register fails
    finder.start()
    try:
        _wait_until(lambda: finder.failures >= 5)
        report = worker_report("finder", [finder])
        ledger, _ = open_ledger(str(tmp_path / "ledger.db"))
        finder.ledger = ledger
        _wait_until(lambda: finder.failures == 0)
        healed = worker_report("finder", [finder])
    finally:
        finder.stop()
        finder.join(10)
        if finder.ledger is not None:
            finder.ledger.close()
    link = report.links[0]
    assert (link.name, link.up, link.fault) == ("inbox", False, True)
    assert "steps failed in a row: AttributeError: 'NoneType' object has no attribute 'register'" in link.reason
    diagnosis = next(d for d in diagnose(StatusBuilder(config()).build({}, [report], 5000), {}, 30.0)
                     if d.name == "source inbox")
    assert diagnosis.level == ERROR and "AttributeError" in diagnosis.message, diagnosis
    assert healed.links[0].up and not healed.links[0].fault
    failed = [record for record in caplog.records if "step failed" in record.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info and "AttributeError" in failed[0].getMessage()


def test_report_pacer_reports_every_period_while_a_transfer_moves_and_heartbeats_when_idle():
    moving = WorkerReport("up", transfers=[TransferStatus(1, "inbox", "a.bin", "upload", "ftp", 10, 100)])
    idle = WorkerReport("up")
    current = [moving]
    sent = []
    pacer = ReportPacer(lambda: current[0], sent.append, period=0.02, idle_period=0.3)
    thread = threading.Thread(target=pacer.run, daemon=True)
    thread.start()
    try:
        _wait_until(lambda: len(sent) >= 5)  # unchanged, but a transfer moves: sent each period
        current[0] = idle
        _wait_until(lambda: sent[-1] == idle)
        count = len(sent)
        _wait_until(lambda: len(sent) >= count + 2)  # idle and unchanged: the heartbeat still goes out
        assert sent[-1] == idle
    finally:
        pacer.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_last_error_tells_the_reporter_of_each_warning():
    handler = LastError()
    heard = []
    handler.notify = lambda: heard.append(handler.message)
    log = logging.getLogger("filesync.test_last_error_notify")
    log.addHandler(handler)
    try:
        log.info("not this")
        log.warning("target ftp is unreachable\nsecond line")
    finally:
        log.removeHandler(handler)
    assert heard == ["target ftp is unreachable"]
