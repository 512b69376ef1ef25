"""The web node on ROS 2: the status page for a browser (filesync.ui.web) on web.host:web.port, 127.0.0.1:8088 by
default. It listens to /filesync/status and /filesync/events and acts through the ledger's manage service when a
request carries the configured token (read once at start, never logged)."""
import errno
import threading

from filesync.errors import ConfigError
from filesync.options import resolve_secret
from filesync.ros2.node import FilesyncNode
from filesync.ros2.status_client import LedgerActions, StatusClient
from filesync.ui.web import StatusPage, StatusServer

BIND_RETRY = 30.0  # seconds between attempts while the port is taken (better than a restart every few seconds)


def main():
    """Run the web node."""
    filesync = FilesyncNode("web")
    log, web = filesync.node.get_logger(), filesync.config.web
    if not web["enabled"]:
        log.info("web: disabled (web.enabled: false)")
        filesync.wait_for_shutdown()
        filesync.close()
        return
    try:
        token = resolve_secret(web, "web", "token")
    except ConfigError as error:
        filesync.fail(f"bad configuration: {error}")
    page = StatusPage()
    server = None
    while server is None and not filesync.finished.is_set():
        try:
            server = StatusServer(web["host"], web["port"], page, LedgerActions(filesync), token, web["allowed_hosts"],
                                  web["request_timeout"], web["max_connections"])
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                filesync.fail(f"web: cannot serve on {web['host']}:{web['port']}: {error.strerror or error}")
            log.error(f"web: {web['host']}:{web['port']} is taken (web.port); trying again in {BIND_RETRY:g} s")
            filesync.finished.wait(BIND_RETRY)
    if server is None:
        filesync.close()
        return
    client = StatusClient(filesync, page.publish)
    threading.Thread(target=server.serve_forever, name="web", daemon=True).start()
    log.info(f"web: status page on http://{web['host']}:{web['port']}/ "
             f"({'retry and forget with the token' if token else 'read-only: no token configured'})")
    filesync.wait_for_shutdown()
    client.close()
    server.shutdown()
    filesync.close()


if __name__ == "__main__":
    main()
