"""launch/sync.launch.py (for `ros2 launch`, not installable here) starts what `filesync-ros2 run` starts: the same
nodes with the same executables under /filesync, the same parameters, each respawned. Read from its source: the
launch system is not on PyPI. And the supervisor and the installed package themselves: a bad file is one line, the
installed executables are the nodes, no node outlives a killed supervisor."""
import ast
import os
import re
import signal
import subprocess
import time

import psutil

from filesync.ros2 import supervisor

LAUNCH_FILE = os.path.join(os.path.dirname(__file__), "..", "..", "launch", "sync.launch.py")


def launch_file():
    with open(LAUNCH_FILE, encoding="utf-8") as handle:
        return ast.parse(handle.read())


def test_the_launch_file_names_every_node_and_parameter_the_supervisor_starts():
    tree = launch_file()
    pairs = next(node for node in ast.walk(tree) if isinstance(node, ast.Assign) and node.targets[0].id == "nodes")
    assert dict(ast.literal_eval(pairs.value)) == supervisor.NODES
    node = next(call for call in ast.walk(tree)
                if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Node")
    keywords = {keyword.arg: keyword.value for keyword in node.keywords}
    assert ast.literal_eval(keywords["namespace"]) == supervisor.NAMESPACE.strip("/")
    assert ast.literal_eval(keywords["respawn"]) is True
    delay = next(node for node in ast.walk(tree) if isinstance(node, ast.Assign) and node.targets[0].id ==
                 "RESPAWN_DELAY")
    assert keywords["respawn_delay"].id == "RESPAWN_DELAY" and ast.literal_eval(delay.value) == \
        supervisor.RESPAWN_DELAY
    parameters = keywords["parameters"].elts[0]
    assert tuple(ast.literal_eval(key) for key in parameters.keys) == supervisor.PARAMETERS
    arguments = [ast.literal_eval(call.args[0]) for call in ast.walk(tree) if isinstance(call, ast.Call)
                 and getattr(call.func, "id", "") == "DeclareLaunchArgument"]
    assert set(supervisor.PARAMETERS) <= set(arguments)


def test_the_supervisor_starts_each_node_under_its_name_with_the_config_parameter(tmp_path):
    command = supervisor.node_command("downloader", str(tmp_path / "c.yaml"))
    assert command[-6:] == ["-r", "__node:=downloader", "-r", "__ns:=/filesync", "-p", f"config:={tmp_path}/c.yaml"]
    assert set(supervisor.COMMANDS) == set(supervisor.NODES.values())


def test_the_ament_package_installs_the_launch_file_config_and_every_node(tmp_path):
    from ament_index_python.packages import get_package_prefix, get_package_share_directory
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "ros2", "filesync", "CMakeLists.txt")) as handle:
        listed = re.search(r"set\(executables ([^)]*)\)", handle.read()).group(1).split()
    assert listed == list(supervisor.NODES.values())
    share = get_package_share_directory("filesync")
    assert os.path.isfile(os.path.join(share, "launch", "sync.launch.py"))
    assert os.path.isfile(os.path.join(share, "config", "default.yaml"))
    for executable in listed:
        assert os.access(os.path.join(get_package_prefix("filesync"), "lib", "filesync", executable), os.X_OK)
    # an installed executable is the node: a missing configuration ends it with one line naming the file
    result = subprocess.run([os.path.join(get_package_prefix("filesync"), "lib", "filesync", "lock_node"),
                             "--ros-args", "-p", f"config:={tmp_path}/missing.yaml"], capture_output=True, text=True,
                            timeout=60, env=dict(os.environ, ROS_LOG_DIR=str(tmp_path)))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == \
        f"/filesync/lock: bad configuration: {tmp_path}/missing.yaml: cannot read: No such file or directory"


def test_filesync_ros2_refuses_a_bad_configuration_in_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("sources: [1\n")
    result = subprocess.run(["filesync-ros2", "run", str(tmp_path / "bad.yaml")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"filesync-ros2: bad configuration: {tmp_path}/bad.yaml: line") and \
        result.stderr.count("\n") == 1, result.stderr


def test_no_node_outlives_a_killed_supervisor(tmp_path):
    (tmp_path / "inbox").mkdir()
    (tmp_path / "config.yaml").write_text(
        f"staging_dir: {tmp_path}/staging\ndatabase: {tmp_path}/db/ledger.db\nlog_dir: {tmp_path}/logs\n"
        f"sources: {{inbox: {{kind: folder, path: {tmp_path}/inbox}}}}\n"
        f"targets: {{out: {{kind: folder, path: {tmp_path}/out}}}}\n"
        "pipelines: [{source: inbox, targets: [out]}]\nftp_server: {enabled: false}\nweb: {enabled: false}\n")
    supervisor_process = subprocess.Popen(["filesync-ros2", "run", str(tmp_path / "config.yaml"), "--log-dir",
                                           str(tmp_path / "nodes")], env=dict(os.environ, ROS_LOG_DIR=str(tmp_path)))
    nodes = []
    try:
        deadline = time.monotonic() + 30
        while len(nodes) < len(supervisor.NODES):
            assert time.monotonic() < deadline, "the nodes did not start"
            time.sleep(0.1)
            nodes = psutil.Process(supervisor_process.pid).children()
        supervisor_process.send_signal(signal.SIGKILL)
        supervisor_process.wait(10)
        _, alive = psutil.wait_procs(nodes, timeout=20)
        assert not alive, [node.cmdline() for node in alive]
    finally:
        supervisor_process.kill()
        for node in nodes:  # orphans of a failed run: not this process's children any more
            try:
                node.kill()
            except psutil.NoSuchProcess:
                pass
