"""The README says only what a test checks: each claim it makes is checked here against the code, the launch and
config files and the Makefile, or names (in CLAIMS) the test that shows it."""
import ast
import os
import re
import xml.etree.ElementTree as ElementTree

import pytest
import yaml

from filesync import cli
from filesync.config import TOP_LEVEL, WEB, load_config, load_config_file
from filesync.devices import SOURCE_KINDS, TARGET_KINDS, create_source, create_target
from filesync.errors import ConfigError
from support import ros_graph
from support.doc_checks import ROOT, fenced_blocks, missing_tests, read, relative_links, section

README = read("README.md")
COMMANDS = ("make run    # installs ROS1 and the Python packages, builds, runs sync.launch on the embedded default\n"
            "make test   # the whole test suite (library tests with pytest, node tests with rostest, the ROS 2 nodes)\n")
# What the README says that only running filesync shows: a phrase of it, and the test that shows it.
CLAIMS = {
    "it appears, verified, in `~/filesync/ftp_root`": "test/test_config.py::test_the_shipped_default_config_loads",
    "password in `~/filesync/ftp_password`, made on first start":
        "test/test_ftpserver.py::test_password_file_is_made_on_first_start_and_private",
    "an interrupted transfer goes on from its\nlast checkpoint":
        "test/test_pipeline.py::test_kill_9_at_random_points_loses_nothing_and_resends_little",
    "every copy is verified on its target":
        "test/test_content.py::test_a_damaged_published_copy_is_caught_by_the_targets_digest_and_sent_again",
    "nothing published is overwritten":
        "test/contract/test_target_contract.py::test_publish_never_replaces_another_file_unless_told",
    "removed only once every target holds a verified copy":
        "test/test_pipeline.py::test_delete_after_upload_removes_the_source_only_when_verified",
    "restarted by roslaunch after a crash": "test/rostest_nodes.py::test_kill_9_of_each_node_mid_transfer",
    "vehicle: owns each mavlink link": "test/test_mavlink_nodes.py::test_every_url_form_through_the_vehicle_node",
    "lock: leases for one-session devices (a PX4)":
        "test/test_mavlink_source.py::test_finder_and_downloader_never_hold_a_session_at_once",
    "<source>/<id>":
        "test/test_content.py::test_a_staged_copy_is_never_reused_for_another_version",
    "stops the node that reads it with one line naming it":
        "test/rostest_nodes.py::test_bad_config_exits_with_one_line_naming_the_key",
    "`rosrun filesync filesync status` (live)": "test/test_cli.py::test_ls_retry_forget_and_the_live_status",
    "(does the target still hold what was delivered?)":
        "test/test_audit.py::test_folder_target_all_good_then_one_deleted_and_one_changed",
    "`/diagnostics` has one status per source and target":
        "test/rostest_status.py::test_status_and_diagnostics_follow_transfers_and_a_lost_server",
    "the robot\n  monitor and two plots": "test/test_perspective.py::test_the_plugins_it_names_exist",
    "read-only unless a `web` token is configured":
        "test/test_status_view.py::test_loopback_reads_without_the_token_and_acts_only_with_it_and_the_header",
    "`filesync-ros2 run CONFIG`":
        "test/ros2/test_ros2_launch_file.py::test_the_launch_file_names_every_node_and_parameter_the_supervisor_starts",
    "The tool is `ros2 run filesync filesync`.": "test/ros2/test_ros2_cli.py::test_ls_status_retry_forget_and_audit",
}


def test_it_fits_a_page():
    assert len(README.splitlines()) < 120


def test_what_it_is_names_every_kind_of_device_and_the_package():
    """The first paragraph names what every registered source and target kind reaches, so a new kind needs a word."""
    paragraph = " ".join(section(README, "## What it is").split("```")[0].split())
    sources = {"mavlink": "(MAVLink FTP", "mavros": "through MAVROS", "drive": "a camera's USB drive",
               "ftp": "an FTP or SFTP server", "sftp": "an FTP or SFTP server", "http": "a web server",
               "folder": "or a folder, through local staging"}
    targets = {"ftp": "onto one or more targets: an FTP or SFTP server", "sftp": "an FTP or SFTP server, S3",
               "s3": "S3, a folder", "folder": "S3, a folder", "drive": "a drive,", "mavlink": "the vehicle itself",
               "mavros": "the vehicle itself", "flight_review": "PX4 Flight Review", "http": "or an HTTP API"}
    assert set(sources) == set(SOURCE_KINDS) and set(targets) == set(TARGET_KINDS)
    for phrase in list(sources.values()) + list(targets.values()):
        assert phrase in paragraph, phrase
    assert "ROS 1 catkin package (`filesync`)" in paragraph and "<name>filesync</name>" in read("package.xml")
    assert "ros-jazzy-rclpy" in read("requirements-ros2.txt") and "run on ROS 2 Jazzy" in README


def test_the_picture_names_options_that_exist():
    picture = fenced_blocks(section(README, "## What it is"), "")[0]
    names = {option.name for option in TOP_LEVEL}
    for option in ("scan_interval", "staging_dir"):
        assert option in picture and option in names, option


def test_the_two_commands_at_the_top_are_the_makefiles():
    assert fenced_blocks(README, "sh")[0] == COMMANDS
    assert README.index(COMMANDS) < README.index("## ")
    makefile = read("Makefile")
    assert re.search(r"^run: ", makefile, re.M) and "exec roslaunch filesync sync.launch" in makefile
    test_target = re.search(r"^test: .*\n\t(.*)\n", makefile, re.M).group(1)
    assert test_target.endswith("test-lib test-ros test-ros2"), test_target


def test_the_embedded_default_is_what_the_readme_says():
    config = load_config_file(os.path.join(ROOT, "config", "default.yaml"))
    (source,), (target,) = config.sources.values(), config.targets.values()
    assert (source["kind"], source["path"]) == ("folder", "~/filesync/inbox")
    assert (target["kind"], target["host"], target["port"], target["user"]) == ("ftp", "127.0.0.1", 2121, "filesync")
    assert target["password_file"] == "~/filesync/ftp_password"
    assert config.ftp_server["root"] == "~/filesync/ftp_root" and config.ftp_server["port"] == 2121
    assert "mkdir -p $(HOME)/filesync/inbox" in read("Makefile")
    assert "drop a file into `~/filesync/inbox`" in README and "127.0.0.1:2121 (user `filesync`" in README


def test_every_claim_names_a_test_that_exists():
    flat = " ".join(README.split())  # a phrase may wrap anywhere
    for phrase, test in CLAIMS.items():
        assert " ".join(phrase.split()) in flat, phrase
    assert missing_tests(" ".join(f"`{test}`" for test in CLAIMS.values())) == []


def test_the_first_setup_loads_and_its_devices_build(monkeypatch):
    block, = fenced_blocks(section(README, "## A first real setup: a PX4 over a serial port, logs to a NAS"), "yaml")
    assert len(block.splitlines()) <= 12
    raw = yaml.safe_load(block)
    config = load_config(raw)
    assert [type(create_source(name, options)).__name__ for name, options in config.sources.items()] == \
        ["MavlinkSource"]
    assert create_source("px4", config.sources["px4"]).options["url"].startswith("/dev/tty")  # a serial port
    monkeypatch.setenv("NAS_PASSWORD", "p")
    alternatives = re.findall(r"^  # or: (\w+): (\{.*\})$", block, re.M)
    targets = [create_target(name, options) for name, options in config.targets.items()]
    targets += [create_target(name, yaml.safe_load(text)) for name, text in alternatives]
    assert [type(target).__name__ for target in targets] == ["FtpTarget", "S3Target"]
    # "A misspelt key or a bad value stops the node that reads it with one line naming it (`sources.px4.baud: ...`)"
    with pytest.raises(ConfigError, match=r"^sources\.px4\.baud: "):
        create_source("px4", {**config.sources["px4"], "baud": "fast"})
    with pytest.raises(ConfigError, match=r"^sources\.px4\.bawd: unknown key"):
        create_source("px4", {**config.sources["px4"], "bawd": 921600})


def test_it_links_the_page_of_every_device_kind():
    linked = set(re.findall(r"\(docs/devices/(\w+)\.md\)", README))
    assert linked == set(SOURCE_KINDS) | set(TARGET_KINDS)


def test_every_link_of_the_readme_and_the_docs_resolves():
    """Relative links resolve. The device pages (docs/devices/, made from the option declarations on another branch)
    are checked once that folder exists."""
    pages = ["README.md"] + [os.path.join("docs", name) for name in os.listdir(os.path.join(ROOT, "docs"))
                             if name.endswith(".md")]
    pending_devices = not os.path.isdir(os.path.join(ROOT, "docs", "devices"))
    for page in pages:
        for link in relative_links(read(page)):
            path = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), link))
            if pending_devices and os.path.relpath(path, ROOT).startswith(os.path.join("docs", "devices") + os.sep):
                continue
            assert os.path.exists(path), f"{page}: {link} does not exist"


def test_the_architecture_picture_names_every_node():
    picture = fenced_blocks(section(README, "## What it is"), "")[0]
    names = {node.get("name") for node in ElementTree.fromstring(read("launch/sync.launch")).iter("node")
             if node.get("pkg") == "filesync"}
    for name in names:
        assert re.search(rf"\b{name}\b", picture), name
    for word in ("source", "staging", "targets", "ledger", "lock"):
        assert word in picture
    respawned = [node.get("respawn") for node in ElementTree.fromstring(read("launch/sync.launch")).iter("node")]
    assert set(respawned) == {"true"}  # "each box is a node under /filesync, restarted by roslaunch after a crash"


def test_how_to_watch_it_is_what_exists():
    watch = section(README, "## Watch it")
    commands = cli.parser()._subparsers._group_actions[0].choices
    for command in re.findall(r"`filesync (\w+)", watch):
        assert command in commands, command
    assert "failed" in cli.FILE_STATES and "--help" in watch
    published = {(endpoint.name, endpoint.direction) for endpoint in ros_graph.endpoints(1)}
    for topic in ("/filesync/status", "/filesync/events", "/diagnostics"):
        assert topic in watch and (topic, "publishes") in published, topic
    status_node = ast.parse(read("src/filesync/ros/status_node.py"))
    assert "latch=True" in read("src/filesync/ros/status_node.py") and \
        any(isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "PERIOD" and n.value.value == 1.0
            for n in status_node.body)  # "latched, about 1 Hz"
    assert "$(rospack find filesync)/config/filesync.perspective" in watch
    assert os.path.isfile(os.path.join(ROOT, "config", "filesync.perspective"))
    assert "rosrun filesync status_window" in watch and os.path.isfile(os.path.join(ROOT, "scripts", "status_window"))
    web = {option.name: option.default for option in WEB}
    assert f"http://{web['host']}:{web['port']}/" in watch


def test_the_ros_2_lines_are_what_exists():
    ros2 = section(README, "## ROS 2")
    assert "`ros2 launch filesync sync.launch.py config:=" in ros2 and \
        os.path.isfile(os.path.join(ROOT, "launch", "sync.launch.py"))
    assert re.search(r"^run-ros2: .*\n(\t.*\n)*\t.*exec filesync-ros2 run \$\(ROOT\)/config/default.yaml",
                     read("Makefile"), re.M)
    assert "install(PROGRAMS \"${CMAKE_CURRENT_BINARY_DIR}/filesync\" DESTINATION lib/${PROJECT_NAME})" in \
        read("ros2/filesync/CMakeLists.txt")
    assert "MAVROS 2" in ros2 and "`test/ros2/test_ros2_mavros.py`" in read("docs/devices/mavros.md") and \
        os.path.isfile(os.path.join(ROOT, "test", "ros2", "test_ros2_mavros.py"))
    assert "Not on ROS 2 yet: the rqt plugin" in read("docs/ros2.md")


def test_every_configuration_in_the_docs_loads():
    """Each YAML configuration the README and docs/ show (a block with `sources`) passes the config loader."""
    pages = ["README.md"] + [os.path.join("docs", name) for name in sorted(os.listdir(os.path.join(ROOT, "docs")))
                             if name.endswith(".md")]
    checked = 0
    for page in pages:
        for block in fenced_blocks(read(page), "yaml"):
            raw = yaml.safe_load(block)
            if isinstance(raw, dict) and "sources" in raw:
                load_config(raw)
                checked += 1
    assert checked >= 4  # the README's first setup, configuration.md's example and its two use cases
