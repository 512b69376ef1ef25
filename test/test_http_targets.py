"""The flight_review and http targets against real HTTP servers on 127.0.0.1.

Flight Review's own server cannot run here (tornado, bokeh, a database): support.flight_review_server stands in for it
and reproduces its upload contract (FACTS.md). The http target talks to a small recording server (support.http_sink).
"""
import hashlib
import json
import logging
import os
import ssl
import subprocess
import sys
import threading
import time

import pytest
import requests

from filesync import errors
from filesync.devices import create_target
from filesync.devices import http as http_device
from filesync.devices.base import local_checksum
from filesync.errors import ConfigError, DeviceUnavailable, PermanentError, TransientError
from support.flight_review_server import FlightReviewServer, write_ulog
from support.http_sink import SinkServer

HERE = os.path.dirname(os.path.abspath(__file__))
MiB = 1 << 20
TOKEN = "s3cr3t-T0KEN-value-4711"



@pytest.fixture
def review_server(tmp_path):
    server = FlightReviewServer(tmp_path / "review").start()
    try:
        yield server
    finally:
        server.stop()


def review_target(server, **options):
    return create_target("review", {"kind": "flight_review", "server": server.url, **options})


def upload(target, local, path=None):
    """Do what the engine does for a non-resumable target: write from 0, then publish. Returns (location, progress)."""
    path = path or os.path.basename(local)
    size = os.path.getsize(local)
    progress = []
    with open(local, "rb") as stream:
        target.write(path, stream, 0, size, progress.append)
    return target.publish(path, local, size), progress


# --- flight_review ------------------------------------------------------------------------------------------------

def test_twenty_logs_arrive_identical_each_with_its_url(tmp_path, review_server):
    target = review_target(review_server)
    logs = []
    for index in range(20):
        local = str(tmp_path / f"log{index:02d}.ulg")
        write_ulog(local, payload_bytes=1000 + index * 7919, seed=index)
        logs.append(local)
    locations = [upload(target, local)[0] for local in logs]
    assert len(review_server.uploads) == 20
    assert len(set(locations)) == 20
    for local, location, stored in zip(logs, locations, review_server.uploads):
        assert location == f"{review_server.url}/plot_app?log={stored.log_id}"
        assert stored.filename == os.path.basename(local)
        assert stored.sha256 == local_checksum(local, "sha256") and stored.size == os.path.getsize(local)
        downloaded = requests.get(f"{review_server.url}/download?log={stored.log_id}", timeout=30)
        assert hashlib.sha256(downloaded.content).hexdigest() == local_checksum(local, "sha256")
        assert requests.get(location, timeout=30).status_code == 200
        assert stored.fields["email"] == ""  # always sent, empty when unset: the server fails without it
        assert stored.fields["redirect"] == "false"
    target.close()


def test_progress_reports_file_bytes_up_to_the_size(tmp_path, review_server):
    local = str(tmp_path / "big.ulg")
    size = write_ulog(local, payload_bytes=3 * MiB)
    _, progress = upload(review_target(review_server), local)
    assert progress == sorted(progress) and progress[-1] == size and len(progress) > 3


def test_fields_follow_the_config_and_the_description_template(tmp_path, review_server):
    local = str(tmp_path / "13_45_10.ulg")
    write_ulog(local)
    target = review_target(review_server, email="pilot@example.com", type="flightreport", public=True,
                           allow_for_analysis=False, vehicle_name="hexa-7", wind_speed=5, rating="good",
                           video_url="https://video.example.com/v/1", feedback="smooth",
                           description="{vehicle} {date} {time} {name} ({path})", source="filesync-test")
    upload(target, local, "2024-05-01/13_45_10.ulg")
    fields = review_server.uploads[0].fields
    assert fields == {"type": "flightreport", "description": "hexa-7 2024-05-01 13:45:10 13_45_10.ulg "
                                                             "(2024-05-01/13_45_10.ulg)",
                      "email": "pilot@example.com", "source": "filesync-test", "feedback": "smooth",
                      "allowForAnalysis": "false", "public": "true", "vehicleName": "hexa-7", "windSpeed": "5",
                      "rating": "good", "videoUrl": "https://video.example.com/v/1", "redirect": "false"}


def test_description_date_falls_back_to_the_file_time_in_utc(tmp_path, review_server):
    local = str(tmp_path / "log001.ulg")
    write_ulog(local)
    os.utime(local, (1717245296, 1717245296))  # 2024-06-01 12:34:56 UTC
    upload(review_target(review_server, description="{date}T{time}", vehicle_name="v"), local, "sess007/log001.ulg")
    assert review_server.uploads[0].fields["description"] == "2024-06-01T12:34:56"


def test_redirect_reply_gives_the_same_full_url(tmp_path, review_server):
    local = str(tmp_path / "a.ulg")
    write_ulog(local)
    location, _ = upload(review_target(review_server, redirect=True), local)
    assert review_server.events[-1][:3] == ("POST", "/upload", 302)
    assert location == f"{review_server.url}/plot_app?log={review_server.uploads[0].log_id}"


def test_a_staged_file_shorter_than_its_record_is_a_file_error(tmp_path, review_server):
    local = str(tmp_path / "short.ulg")
    size = write_ulog(local)
    with open(local, "rb") as stream, pytest.raises(errors.FileError) as raised:
        review_target(review_server).write("short.ulg", stream, 0, size + 100, lambda sent: None)
    assert f"ended after {size} of {size + 100} bytes" in str(raised.value)
    assert review_server.uploads == []


def test_a_non_ulog_file_is_refused_before_sending(tmp_path, review_server):
    local = tmp_path / "notes.txt"
    local.write_bytes(b"not a flight log\n" * 100)
    with pytest.raises(PermanentError) as raised:
        upload(review_target(review_server), str(local))
    assert isinstance(raised.value, http_device.SkipFile)
    assert "not a ULog file" in str(raised.value)
    assert review_server.events == []  # nothing was sent


def test_the_server_refuses_non_ulog_and_missing_email_like_the_real_one(tmp_path, review_server):
    """The stand-in's own contract (FACTS.md): 400 Invalid File without the magic, 500 without email."""
    files = {"filearg": ("x.ulg", b"hello world, no magic here")}
    answer = requests.post(f"{review_server.url}/upload", data={"description": "", "email": ""}, files=files,
                           allow_redirects=False, timeout=30)
    assert answer.status_code == 400 and "HTTP Error 400: Invalid File" in answer.text
    valid = tmp_path / "v.ulg"
    write_ulog(str(valid))
    answer = requests.post(f"{review_server.url}/upload", data={"description": ""},
                           files={"filearg": ("v.ulg", valid.read_bytes())}, allow_redirects=False, timeout=30)
    assert answer.status_code == 500
    assert review_server.uploads == []


def test_a_400_is_permanent_with_the_servers_message(tmp_path, review_server):
    local = tmp_path / "cut.ulg"
    local.write_bytes(b"ULog\x01\x12\x35\x01\x00")  # the magic, but shorter than a ULog header: pyulog fails
    with pytest.raises(PermanentError) as raised:
        upload(review_target(review_server), str(local))
    assert not isinstance(raised.value, http_device.SkipFile)
    assert "HTTP 400" in str(raised.value)
    assert "Failed to parse the file. It is most likely corrupt." in str(raised.value)


def test_503_is_transient_and_the_next_attempt_succeeds(tmp_path, review_server):
    local = str(tmp_path / "a.ulg")
    write_ulog(local)
    target = review_target(review_server)
    review_server.fail_next(503)
    with pytest.raises(TransientError) as raised:
        upload(target, local)
    assert not isinstance(raised.value, DeviceUnavailable) and "HTTP 503" in str(raised.value)
    location, _ = upload(target, local)
    assert [upload.sha256 for upload in review_server.uploads] == [local_checksum(local, "sha256")]
    assert location.endswith(review_server.uploads[0].log_id)


@pytest.mark.parametrize("status", [500, 502, 429])
def test_other_server_errors_are_transient(tmp_path, review_server, status):
    local = str(tmp_path / "a.ulg")
    write_ulog(local)
    review_server.fail_next(status)
    with pytest.raises(TransientError):
        upload(review_target(review_server), local)


def test_server_killed_mid_body_then_restarted_second_attempt_succeeds(tmp_path, review_server):
    local = str(tmp_path / "long.ulg")
    write_ulog(local, payload_bytes=8 * MiB, seed=5)
    target = review_target(review_server)
    review_server.die_after(2 * MiB)
    with pytest.raises(TransientError) as raised:
        upload(target, local)
    assert not isinstance(raised.value, DeviceUnavailable)  # the connection was made, then lost
    assert not review_server.running and review_server.uploads == []
    assert os.listdir(review_server.incoming_dir) == []  # the partial body was not kept
    review_server.start()
    location, _ = upload(target, local)
    assert len(review_server.uploads) == 1 and review_server.uploads[0].sha256 == local_checksum(local, "sha256")
    assert location.endswith(review_server.uploads[0].log_id)


class SilentServer:
    """A TCP listener that reads a request and then either never answers or hangs up without a word."""

    def __init__(self, hang_up):
        import socket
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.hang_up, self.done = hang_up, threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        import socket
        connections = []
        while not self.done.is_set():
            try:
                connection, _ = self.listener.accept()
            except socket.timeout:
                continue
            connections.append(connection)
            connection.settimeout(5)
            received = b""
            try:
                while b"\r\n\r\n" not in received:
                    received += connection.recv(65536)
                head, _, body = received.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                while len(body) < length:
                    body += connection.recv(65536)
            except (OSError, StopIteration):
                pass
            if self.hang_up:
                connection.close()
        for connection in connections:
            connection.close()

    def stop(self):
        self.done.set()
        self.thread.join(10)
        self.listener.close()


@pytest.mark.parametrize("hang_up, words", [(False, "no answer within"), (True, "connection lost")])
def test_no_answer_or_a_lost_answer_is_transient(tmp_path, hang_up, words):
    local = str(tmp_path / "a.ulg")
    write_ulog(local)
    server = SilentServer(hang_up)
    try:
        target = create_target("review", {"kind": "flight_review", "server": server.url, "timeout": 1})
        with pytest.raises(TransientError) as raised:
            upload(target, local)
        assert not isinstance(raised.value, DeviceUnavailable) and words in str(raised.value)
    finally:
        server.stop()


def test_host_down_is_device_unavailable_until_it_is_back(tmp_path, review_server):
    local = str(tmp_path / "a.ulg")
    write_ulog(local)
    target = review_target(review_server, connect_timeout=5)
    target.probe()
    review_server.stop()
    with pytest.raises(DeviceUnavailable):
        target.probe()
    with pytest.raises(DeviceUnavailable) as raised:
        upload(target, local)
    assert "cannot connect" in str(raised.value)
    review_server.start()
    target.probe()
    upload(target, local)
    assert len(review_server.uploads) == 1


def test_body_over_the_limit_needs_expected_size(tmp_path, monkeypatch):
    """The server drops a body over its limit; expected_size (the whole body's length) lifts it."""
    server = FlightReviewServer(tmp_path / "review", body_limit=MiB).start()
    try:
        local = str(tmp_path / "two.ulg")
        write_ulog(local, payload_bytes=2 * MiB)
        target = review_target(server)
        with pytest.raises((PermanentError, TransientError)):  # a bare 400 or a reset, as tornado does
            upload(target, local)
        assert server.events[-1][2:] == (400, "Content-Length too long") and server.uploads == []
        monkeypatch.setattr(http_device, "EXPECTED_SIZE_FROM", MiB)
        upload(target, local)
        assert server.uploads[0].sha256 == local_checksum(local, "sha256")
        assert int(server.uploads[0].query["expected_size"]) > os.path.getsize(local)  # file plus form overhead
    finally:
        server.stop()


LARGE_UPLOAD_CHILD = r"""
import json, sys
from filesync.devices import create_target
target = create_target("review", {"kind": "flight_review", "server": sys.argv[1], "timeout": 300})
size = int(sys.argv[3])
done = [0]
with open(sys.argv[2], "rb") as stream:
    target.write("big.ulg", stream, 0, size, lambda sent: done.__setitem__(0, sent))
location = target.publish("big.ulg", sys.argv[2], size)
with open("/proc/self/status") as status:
    peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"location": location, "peak_kib": peak_kib, "progress": done[0]}))
"""


def test_400_mb_log_goes_up_with_expected_size_in_flat_memory(tmp_path, review_server):
    local = str(tmp_path / "big.ulg")
    size = write_ulog(local, payload_bytes=400 * 1000 * 1000, block=60000, seed=9)
    assert size > 400 * 1000 * 1000
    child = subprocess.run([sys.executable, "-c", LARGE_UPLOAD_CHILD, review_server.url, local, str(size)],
                           capture_output=True, text=True, timeout=600,
                           env={**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(HERE), "src")})
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    stored = review_server.uploads[0]
    assert int(stored.query["expected_size"]) > size
    assert stored.size == size and stored.sha256 == local_checksum(local, "sha256")
    assert result["location"].endswith(stored.log_id) and result["progress"] == size
    assert result["peak_kib"] < 100 * 1024, f"peak RSS {result['peak_kib']} KiB"


# --- TLS ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return str(key), str(cert)


@pytest.fixture
def https_server(tmp_path, certificate):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate[1], certificate[0])
    server = FlightReviewServer(tmp_path / "review", ssl_context=context).start()
    try:
        yield server
    finally:
        server.stop()


def test_https_is_verified_by_default_and_trusts_a_configured_ca_bundle(tmp_path, https_server, certificate):
    local = str(tmp_path / "a.ulg")
    write_ulog(local)
    with pytest.raises(DeviceUnavailable) as raised:  # self-signed: refused, and nothing is parked for it
        upload(review_target(https_server), local)
    assert "certificate verify failed" in str(raised.value)
    with pytest.raises(DeviceUnavailable):
        review_target(https_server).probe()
    location, _ = upload(review_target(https_server, ca_bundle=certificate[1]), local)
    assert location.startswith(https_server.url + "/plot_app?log=")
    assert len(https_server.uploads) == 1


def test_verify_tls_false_works_and_warns_once_at_start(tmp_path, https_server, caplog):
    local = str(tmp_path / "a.ulg")
    write_ulog(local)
    with caplog.at_level(logging.WARNING, logger="filesync.devices.http"):
        target = review_target(https_server, verify_tls=False)
        upload(target, local)
        upload(target, local)
    warnings = [r for r in caplog.records if r.name == "filesync.devices.http"]
    assert len(warnings) == 1 and "verify_tls is false" in warnings[0].getMessage()
    assert len(https_server.uploads) == 2  # no deduplication, as on the real server


# --- config errors ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, key, words", [
    ({"kind": "flight_review"}, "targets.t.server", "required but missing"),
    ({"kind": "flight_review", "server": "logs.px4.io"}, "targets.t.server", "http"),
    ({"kind": "flight_review", "server": "https://logs.px4.io", "type": "public"}, "targets.t.type",
     "not one of personal, flightreport"),
    ({"kind": "flight_review", "server": "https://logs.px4.io", "rating": "meh"}, "targets.t.rating", "not one of"),
    ({"kind": "flight_review", "server": "https://logs.px4.io", "public": "yes"}, "targets.t.public",
     "true or false"),
    ({"kind": "flight_review", "server": "https://logs.px4.io", "description": "{pilot} flew"},
     "targets.t.description", "unknown placeholder {pilot}"),
    ({"kind": "flight_review", "server": "https://logs.px4.io", "ca_bundle": "/nonexistent/ca.pem"},
     "targets.t.ca_bundle", "no such file"),
    ({"kind": "flight_review", "server": "https://logs.px4.io", "timeout": 0}, "targets.t.timeout", "above 0"),
    ({"kind": "flight_review", "server": "https://logs.px4.io", "mail": "a@b.c"}, "targets.t.mail", "unknown key"),
    ({"kind": "http"}, "targets.t.url", "required but missing"),
    ({"kind": "http", "url": "ftp://host/{name}"}, "targets.t.url", "http"),
    ({"kind": "http", "url": "https://host/{file}"}, "targets.t.url", "unknown placeholder {file}"),
    ({"kind": "http", "url": "https://host/{name}", "method": "GET"}, "targets.t.method", "not one of PUT, POST"),
    ({"kind": "http", "url": "https://host/{name}", "body": "form"}, "targets.t.body", "not one of"),
    ({"kind": "http", "url": "https://host/{name}", "success_status": [200, 302]}, "targets.t.success_status",
     "2xx"),
    ({"kind": "http", "url": "https://host/{name}", "headers": {"X-N": 5}}, "targets.t.headers", "strings"),
    ({"kind": "http", "url": "https://host/{name}", "token_env": "FILESYNC_TEST_NO_SUCH_VARIABLE"},
     "targets.t.token_env", "FILESYNC_TEST_NO_SUCH_VARIABLE is not set"),
    ({"kind": "http", "url": "https://host/{name}", "headers_env": {"X-Key": "FILESYNC_TEST_NO_SUCH_VARIABLE"}},
     "targets.t.headers_env.X-Key", "is not set"),
])
def test_bad_config_is_one_line_naming_the_key(options, key, words):
    with pytest.raises(ConfigError) as raised:
        create_target("t", options)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(key + ":"), message
    assert words in message, message


# --- http ---------------------------------------------------------------------------------------------------------

@pytest.fixture
def sink(tmp_path):
    server = SinkServer(tmp_path / "sink")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("FILESYNC_TEST_UPLOAD_TOKEN", TOKEN)
    return TOKEN


def test_http_put_raw_with_a_bearer_token_from_the_environment(tmp_path, sink, token):
    local = str(tmp_path / "a b.bin")
    write_ulog(local, payload_bytes=300_000)
    target = create_target("web", {"kind": "http", "url": sink.url + "/files/{vehicle}/{path}",
                                   "vehicle": "hexa 7", "token_env": "FILESYNC_TEST_UPLOAD_TOKEN",
                                   "headers": {"X-Source": "filesync"},
                                   "headers_env": {"X-Api-Key": "FILESYNC_TEST_UPLOAD_TOKEN"}})
    location, progress = upload(target, local, "2024-05-01/a b.bin")
    request = sink.requests[0]
    assert request["method"] == "PUT" and request["path"] == "/files/hexa%207/2024-05-01/a%20b.bin"
    assert request["headers"]["Authorization"] == f"Bearer {token}"
    assert request["headers"]["X-Source"] == "filesync" and request["headers"]["X-Api-Key"] == token
    assert request["sha256"] == local_checksum(local, "sha256")
    assert location == sink.url + "/files/hexa%207/2024-05-01/a%20b.bin"
    assert progress[-1] == os.path.getsize(local)


def test_http_post_multipart_with_fields_and_location_header(tmp_path, sink, token):
    local = str(tmp_path / "photo.jpg")
    with open(local, "wb") as handle:
        handle.write(os.urandom(500_000))
    sink.location = "/stored/42"
    target = create_target("web", {"kind": "http", "url": sink.url + "/upload", "method": "POST",
                                   "body": "multipart", "file_field": "upload", "fields": {"kind": "photo"},
                                   "token_env": "FILESYNC_TEST_UPLOAD_TOKEN", "success_status": [201]})
    location, _ = upload(target, local, "cam/photo.jpg")
    request = sink.requests[0]
    assert request["method"] == "POST" and request["headers"]["Authorization"] == f"Bearer {token}"
    assert request["fields"] == {"kind": "photo"}
    assert request["files"] == {"upload": ("photo.jpg", local_checksum(local, "sha256"))}
    assert location == sink.url + "/stored/42"


def test_http_token_never_appears_in_errors_or_logs(tmp_path, sink, token, caplog):
    local = str(tmp_path / "a.bin")
    local_size = 1000
    with open(local, "wb") as handle:
        handle.write(b"x" * local_size)
    target = create_target("web", {"kind": "http", "url": sink.url + "/{name}", "method": "POST",
                                   "token_env": "FILESYNC_TEST_UPLOAD_TOKEN"})
    texts = []
    with caplog.at_level(logging.DEBUG):
        for status, kind in ((403, errors.AuthRefused), (400, PermanentError), (503, TransientError),
                             (202, PermanentError)):  # 202 is a 2xx outside success_status
            sink.statuses.append(status)
            with pytest.raises(kind) as raised:
                upload(target, local)
            texts.append(str(raised.value))
        sink.stop()
        with pytest.raises(DeviceUnavailable) as raised:
            upload(target, local)
        texts.append(str(raised.value))
    assert "refused, you sent Authorization: Bearer ***" in texts[0]  # the server's echo, redacted
    assert all(token not in text for text in texts), texts
    assert token not in caplog.text


def test_http_success_status_list_is_honoured(tmp_path, sink):
    local = str(tmp_path / "a.bin")
    with open(local, "wb") as handle:
        handle.write(b"y" * 10)
    target = create_target("web", {"kind": "http", "url": sink.url + "/{name}", "success_status": [202, 204]})
    sink.statuses += [204, 202]
    upload(target, local)
    upload(target, local)
    assert len(sink.requests) == 2


def test_http_host_down_is_device_unavailable(tmp_path, sink):
    target = create_target("web", {"kind": "http", "url": sink.url + "/{name}"})
    target.probe()
    sink.stop()
    with pytest.raises(DeviceUnavailable):
        target.probe()


# --- through the engine -------------------------------------------------------------------------------------------

def pipeline_config(tmp_path, server):
    return {"staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
            "scan_interval": 0.5, "poll_interval": 0.5, "retry_base": 0.2, "retry_cap": 1.0, "lease_seconds": 10.0,
            "max_attempts": 3,
            "sources": {"logs": {"kind": "folder", "path": str(tmp_path / "logs"), "min_age": 0.0}},
            "targets": {"review": {"kind": "flight_review", "server": server.url, "connect_timeout": 5}},
            "pipelines": [{"source": "logs", "targets": ["review"]}]}


def make_logs(tmp_path, count):
    paths = []
    for index in range(count):
        path = f"2024-05-0{1 + index % 3}/10_00_{index:02d}.ulg"
        os.makedirs(tmp_path / "logs" / os.path.dirname(path), exist_ok=True)
        write_ulog(str(tmp_path / "logs" / path), payload_bytes=5000 + index * 3000, seed=index)
        paths.append(path)
    return paths


def test_pipeline_logs_reach_flight_review_and_the_url_is_recorded(tmp_path, review_server):
    from filesync.engine.runner import LocalRunner
    paths = make_logs(tmp_path, 6)
    (tmp_path / "logs" / "readme.txt").write_text("not a log\n")
    review_server.fail_next(503)  # the first upload is answered 503 and retried
    runner = LocalRunner(pipeline_config(tmp_path, review_server))
    try:
        runner.run_until_settled(timeout=120)
        records = {r.path: r for r in runner.ledger.files()}
    finally:
        runner.close()
    stored = {upload.log_id: upload for upload in review_server.uploads}
    for path in paths:
        task = records[path].task("upload", "review")
        assert records[path].state == "uploaded" and task.state == "done"
        log_id = task.location.split("log=", 1)[1]
        assert task.location == f"{review_server.url}/plot_app?log={log_id}"
        assert stored[log_id].sha256 == local_checksum(tmp_path / "logs" / path, "sha256")
    assert len(review_server.uploads) == len(paths)
    skipped = records["readme.txt"].task("upload", "review")
    assert "not a ULog file" in skipped.error
    # With errors.SkipFile (proposed) the engine marks such a file skipped; until then a PermanentError parks it.
    assert skipped.state == ("skipped" if hasattr(errors, "SkipFile") else "parked")


def test_pipeline_waits_while_the_host_is_down_and_parks_nothing(tmp_path, review_server):
    from filesync.engine.runner import LocalRunner
    paths = make_logs(tmp_path, 5)
    review_server.stop()
    runner = LocalRunner(pipeline_config(tmp_path, review_server))
    try:
        runner.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # every log staged, every upload waiting on the host
            records = runner.ledger.files()
            if len(records) == len(paths) and all(r.task("download").state == "done" for r in records):
                break
            time.sleep(0.2)
        time.sleep(3)  # the host stays down for a while: several probes fail
        records = runner.ledger.files()
        assert len(records) == len(paths)
        assert all(r.task("upload", "review").state == "waiting" for r in records), [
            (r.path, r.task("upload", "review")) for r in records]
        assert all(r.task("upload", "review").attempts == 0 for r in records)
        review_server.start()
        runner.run_until_settled(timeout=120)
        records = runner.ledger.files()
    finally:
        runner.close()
    assert {r.state for r in records} == {"uploaded"}
    assert sorted(u.sha256 for u in review_server.uploads) == sorted(local_checksum(tmp_path / "logs" / p, "sha256") for p in paths)


def test_refused_credentials_wait_and_park_nothing(tmp_path, review_server):
    """401/403 are wrong for every file alike: the worker waits (growing backoff), no file is parked or charged."""
    from filesync.engine.runner import LocalRunner
    paths = make_logs(tmp_path, 3)
    review_server.fail_next(401, 3)
    runner = LocalRunner(pipeline_config(tmp_path, review_server))
    worker = next(loop for loop in runner.loops if loop.name == "upload:review")
    states, refused_reasons = set(), set()
    try:
        runner.start()
        deadline = time.monotonic() + 60
        while not runner.settled() and time.monotonic() < deadline:
            states |= {r.state for r in runner.ledger.files()}
            if not worker.link.up:
                refused_reasons.add(worker.link.reason)
            time.sleep(0.05)
        records = runner.ledger.files()
    finally:
        runner.close()
    assert "failed" not in states
    assert {r.state for r in records} == {"uploaded"} and len(records) == len(paths)
    assert all(r.task("upload", "review").attempts == 0 for r in records)
    assert any("HTTP 401" in reason and "check the credentials" in reason for reason in refused_reasons), \
        refused_reasons
