"""The filesync nodes as processes, each startable and killable on its own, the way roslaunch runs them.

Tests use it to choose the moment of each kill -9; it needs the catkin workspace's environment (devel/setup.bash).
"""
import os
import shutil
import signal
import subprocess


def node_command(node_type, environment=None):
    """The devel-space relay of a node: it runs under the interpreter the workspace was built with."""
    relay = subprocess.run(["catkin_find", "--first-only", "--libexec", "filesync", node_type], env=environment,
                           capture_output=True, text=True, timeout=60).stdout.strip()
    return [relay or shutil.which(node_type)]


class Stack:
    """Nodes under /filesync by name; `environment` (default: this process's) points them at a master."""

    TYPES = {"ledger": "ledger_node", "lock": "lock_node", "finder": "finder_node", "downloader": "downloader_node",
             "uploader": "uploader_node", "status": "status_node", "ftp_server": "ftp_server_node"}

    def __init__(self, workdir, environment=None):
        self.workdir = workdir
        self.environment = environment
        self.processes = {}

    def start(self, name, remaps=()):
        """Start node `name` (a key of TYPES) with `remaps` (from:=to); its output goes to <workdir>/<name>.log."""
        log = open(os.path.join(self.workdir, f"{name}.log"), "a")
        self.processes[name] = subprocess.Popen(
            node_command(self.TYPES[name], self.environment) + ["__ns:=/filesync", f"__name:={name}", *remaps],
            env=self.environment, stdout=log, stderr=subprocess.STDOUT)

    def kill(self, name):
        """kill -9, as a crash or a power cut would."""
        process = self.processes.pop(name, None)
        if process and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)

    def stop_all(self):
        """Stop every node politely (SIGINT, as roslaunch does), the last started first."""
        for name in reversed(list(self.processes)):
            process = self.processes.pop(name)
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
