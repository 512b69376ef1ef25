"""The systemd unit: rendered for a configuration, waiting for the network only when a target is elsewhere, and
accepted by systemd-analyze."""
import shutil
import subprocess

import pytest
import yaml

from filesync.service import main, render

LOCAL = {"sources": {"inbox": {"kind": "folder", "path": "/tmp/in"}},
         "targets": {"ftp": {"kind": "ftp", "host": "127.0.0.1"}},
         "pipelines": [{"source": "inbox", "targets": ["ftp"]}]}


def write(tmp_path, config):
    path = tmp_path / "filesync.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.parametrize("target, waits", [
    ({"kind": "ftp", "host": "127.0.0.1"}, False),
    ({"kind": "folder", "path": "/mnt/usb"}, False),
    ({"kind": "ftp", "host": "ground.example.org"}, True),
    ({"kind": "flight_review", "server": "https://review.px4.io"}, True),
    ({"kind": "http", "url": "http://10.0.0.2:8080/upload/{path}"}, True),
])
def test_the_unit_waits_for_the_network_only_for_a_remote_target(tmp_path, target, waits):
    config = dict(LOCAL, targets={"t": target}, pipelines=[{"source": "inbox", "targets": ["t"]}])
    text = render(write(tmp_path, config), "/opt/ws", "root")
    assert ("After=network-online.target" in text) == waits
    assert ("Wants=network-online.target" in text) == waits
    assert "Restart=on-failure" in text and "User=root" in text
    assert "source /opt/ws/devel/setup.bash && exec roslaunch filesync sync.launch config:=" in text
    assert "@" not in text  # every placeholder filled


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path):
    unit = tmp_path / "filesync.service"
    assert main(["--config", write(tmp_path, LOCAL), "--workspace", str(tmp_path), "--user", "root",
                 "--output", str(unit)]) == 0
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_bad_config_is_one_line(tmp_path, capsys):
    bad = dict(LOCAL, checkpoint_bytes=-1)
    assert main(["--config", write(tmp_path, bad), "--workspace", "/ws", "--output", str(tmp_path / "u")]) == 2
    assert capsys.readouterr().err == "filesync.service: checkpoint_bytes: must be above 0, got -1\n"
