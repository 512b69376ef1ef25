"""The web node: the status page for a browser (filesync.ui.web) on web.host:web.port, 127.0.0.1:8088 by default.

It listens to /filesync/status and /filesync/events (StatusClient) and acts through the ledger's manage service
(LedgerActions) when a request carries the configured token. The token is read once at start and never logged.
"""
import errno
import threading

import rospy

from filesync.errors import ConfigError
from filesync.options import resolve_secret
from filesync.ros.node import fail, start_node, wait_for_shutdown
from filesync.ros.status_client import LedgerActions, StatusClient
from filesync.ui.web import StatusPage, StatusServer

BIND_RETRY = 30.0  # seconds between attempts while the port is taken (better than a respawn every few seconds)


def main():
    """Run the web node."""
    config = start_node("web")
    web = config.web
    if not web["enabled"]:
        rospy.loginfo("web: disabled (web.enabled: false)")
        wait_for_shutdown()
        return
    try:
        token = resolve_secret(web, "web", "token")
    except ConfigError as error:
        fail(f"bad configuration: {error}")
    page = StatusPage()
    stopped = threading.Event()
    rospy.on_shutdown(stopped.set)
    server = None
    while server is None and not stopped.is_set():
        try:
            server = StatusServer(web["host"], web["port"], page, LedgerActions(), token, web["allowed_hosts"],
                                  web["request_timeout"], web["max_connections"])
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                fail(f"web: cannot serve on {web['host']}:{web['port']}: {error.strerror or error}")
            rospy.logerr(f"web: {web['host']}:{web['port']} is taken (web.port); trying again in {BIND_RETRY:g} s")
            stopped.wait(BIND_RETRY)
    if server is None:
        return
    client = StatusClient(page.publish)
    thread = threading.Thread(target=server.serve_forever, name="web", daemon=True)
    thread.start()
    rospy.loginfo(f"web: status page on http://{web['host']}:{web['port']}/ "
                  f"({'retry and forget with the token' if token else 'read-only: no token configured'})")
    wait_for_shutdown()
    client.close()
    server.shutdown()
