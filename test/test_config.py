"""Configuration errors are one line that names the key."""
import pytest

from filesync.config import load_config, load_config_file
from filesync.devices import create_source, create_target
from filesync.errors import ConfigError


def base():
    return {"sources": {"inbox": {"kind": "folder", "path": "/tmp/in"}},
            "targets": {"ftp": {"kind": "ftp", "host": "127.0.0.1"}},
            "pipelines": [{"source": "inbox", "targets": ["ftp"]}]}


def test_defaults():
    config = load_config(base())
    assert config.checkpoint_bytes == 1 << 20
    assert config.database.endswith("filesync/ledger.db")
    assert not config.pipelines[0].delete_after_upload


@pytest.mark.parametrize("change, key", [
    (lambda c: c.pop("sources"), "sources: required"),
    (lambda c: c.update(checkpoint_bytes=0), "checkpoint_bytes: must be above 0"),
    (lambda c: c.update(checkpoint_bytes="1M"), "checkpoint_bytes: expected an integer"),
    (lambda c: c.update(scan_intervall=3), "scan_intervall: unknown key"),
    (lambda c: c["sources"]["inbox"].pop("kind"), "sources.inbox.kind: required"),
    (lambda c: c["pipelines"][0].update(source="nope"), "pipelines[0].source: no source named 'nope'"),
    (lambda c: c["pipelines"][0].update(targets=["ftp", "web"]), "pipelines[0].targets: no target named 'web'"),
    (lambda c: c["pipelines"][0].update(targets=[]), "pipelines[0].targets: needs at least one target"),
    (lambda c: c["pipelines"][0].update(delete_after_upload="yes"), "pipelines[0].delete_after_upload: expected true"),
    (lambda c: c.update(ftp_server={"enabled": True}), "ftp_server.users: an enabled server needs"),
    (lambda c: c.update(ftp_server={"port": 99999}), "ftp_server.port: must be a port"),
    (lambda c: c.update(ftp_server={"users": [{"password": "x"}]}), "ftp_server.users[0].name: required"),
])
def test_bad_config_names_the_key(change, key):
    config = base()
    change(config)
    with pytest.raises(ConfigError) as error:
        load_config(config)
    assert str(error.value).startswith(key)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("section, options, key", [
    ("sources", {"kind": "folder"}, "sources.x.path: required"),
    ("sources", {"kind": "folder", "path": "/a", "min_age": -1}, "sources.x.min_age: must be 0 or more"),
    ("sources", {"kind": "teleport"}, "sources.x.kind: unknown kind 'teleport'"),
    ("targets", {"kind": "ftp"}, "targets.x.host: required"),
    ("targets", {"kind": "ftp", "host": "h", "port": "21"}, "targets.x.port: expected an integer"),
    ("targets", {"kind": "ftp", "host": "h", "pasword": "x"}, "targets.x.pasword: unknown key"),
])
def test_bad_device_options_name_the_key(section, options, key):
    create = create_source if section == "sources" else create_target
    with pytest.raises(ConfigError) as error:
        create("x", options)
    assert str(error.value).startswith(key)


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sources:\n  inbox: {kind: folder\n")
    with pytest.raises(ConfigError) as error:
        load_config_file(str(path))
    assert str(path) in str(error.value) and "line" in str(error.value)


def test_the_shipped_default_config_loads():
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    config = load_config_file(os.path.join(here, "..", "config", "default.yaml"))
    for name, options in config.sources.items():
        create_source(name, options)
    for name, options in config.targets.items():
        create_target(name, options)
