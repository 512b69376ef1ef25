"""The status page in a real browser (Debian's chromium, headless, through chromedriver) against the real sync.launch
and its web node: the page loads, a transfer's progress moves, a parked file shows its reason, it is read-only
without the token, and with it Retry puts the file back in line. A client from another address (a network
namespace) is refused without the token. Screenshots go to build/test-artifacts/."""
import json
import os
import shutil
import subprocess
import time
import uuid

import pytest
import requests

from support.launch import NEEDS_ROS_WORKSPACE, free_port, ros_workspace_sourced
from support.ui_scene import CLASH, Scene, copy_artifact

TOKEN = "t0ken-" + uuid.uuid4().hex


def browser(width, height):
    """Headless chromium; skipped where Debian's chromium and chromedriver are not installed."""
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("needs Debian's chromium and chromium-driver")
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}", "--no-proxy-server"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def wait(predicate, timeout, what, scene=None):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception:  # the page is between two renders
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen in {timeout} s" + ("\n" + scene.logs() if scene else ""))
        time.sleep(0.1)


@pytest.mark.skipif(not ros_workspace_sourced(), reason=NEEDS_ROS_WORKSPACE)
def test_page_shows_progress_and_parked_reason_and_retries_with_the_token(tmp_path):
    from selenium.webdriver.common.by import By
    driver = browser(1000, 900)
    scene = None
    try:
        scene = Scene(tmp_path, token=TOKEN).start()
        base = f"http://127.0.0.1:{scene.web_port}"
        wait(lambda: requests.get(base + "/api/status", timeout=2).ok, 30, "the web node's first status", scene)
        driver.get(base + "/")
        assert driver.title == "filesync"

        def progress():
            bars = driver.find_elements(By.CSS_SELECTOR, ".transfer [role=progressbar]")
            return float(bars[0].get_attribute("aria-valuenow")) if bars else None

        first = wait(lambda: progress() if 0 < (progress() or 0) < 100 else None, 30, "a transfer in progress", scene)
        later = wait(lambda: progress() if (progress() or 0) > first else None, 10, "the progress moving", scene)
        assert first < later < 100
        reason = wait(lambda: driver.find_element(By.CSS_SELECTOR, ".parked .reason").text, 30,
                      "the parked file's reason", scene)
        assert "already holds a different file" in reason
        assert driver.find_element(By.ID, "read-only").is_displayed()  # no token: no buttons
        assert not driver.find_elements(By.CSS_SELECTOR, ".parked button.retry")
        driver.save_screenshot(str(tmp_path / "web-status.png"))
        copy_artifact(str(tmp_path / "web-status.png"), "web-status.png")

        driver.set_window_size(412, 915)  # a phone: one column, nothing wider than the screen
        wait(lambda: driver.execute_script("return document.documentElement.scrollWidth") <= 412, 5,
             "a page as narrow as a phone")
        driver.save_screenshot(str(tmp_path / "web-status-phone.png"))
        copy_artifact(str(tmp_path / "web-status-phone.png"), "web-status-phone.png")
        driver.set_window_size(1000, 900)

        # without the token nothing can be done, even from this machine
        refused = requests.post(f"{base}/api/files/1/retry", headers={"X-Filesync-Action": "1"}, timeout=5)
        assert refused.status_code == 403
        # with it (once in the address, then a cookie) the page retries
        driver.get(f"{base}/?token={TOKEN}")
        assert driver.current_url == base + "/"  # the token left the address bar
        scene.clear_clash()
        wait(lambda: driver.find_element(By.CSS_SELECTOR, ".parked button.retry"), 15, "a Retry button").click()
        wait(lambda: "back in line" in driver.find_element(By.ID, "action-result").text, 15, "the retry's answer")
        wait(lambda: not driver.find_elements(By.CSS_SELECTOR, ".parked"), 15, "the parked list emptied", scene)
        wait(lambda: scene.uploaded(CLASH), 30, "the retried file on the server", scene)
    finally:
        driver.quit()
        if scene:
            scene.stop()


NAMESPACE_SCRIPT = r"""
import sys, urllib.request, urllib.error
url, token = sys.argv[1], sys.argv[2]
codes = []
for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer " + token}):
    try:
        codes.append(urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5).status)
    except urllib.error.HTTPError as error:
        codes.append(error.code)
print(codes)
"""


def test_a_client_from_another_address_needs_the_token(tmp_path):
    """The web server bound to a veth address; a client in a network namespace (another address) without the token
    is refused, with it served. The page's server code as the web node runs it, fed one status view."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 for a network namespace")
    from filesync.status import status_view, Status
    from filesync.ui.web import StatusPage, StatusServer
    name = "fsweb" + uuid.uuid4().hex[:6]
    host_side, inner_side = f"{name}a", f"{name}b"
    prefix = f"10.{77 + os.getpid() % 100}.{os.getpid() % 250}"

    def ip(*arguments):
        subprocess.run(["ip", *arguments], check=True, capture_output=True, timeout=30)

    try:
        ip("netns", "add", name)
    except subprocess.CalledProcessError as error:
        pytest.skip(f"no network namespaces here: {error.stderr.decode().strip()}")
    server = None
    try:
        ip("link", "add", host_side, "type", "veth", "peer", "name", inner_side)
        ip("link", "set", inner_side, "netns", name)
        ip("addr", "add", f"{prefix}.1/30", "dev", host_side)
        ip("link", "set", host_side, "up")
        ip("netns", "exec", name, "ip", "addr", "add", f"{prefix}.2/30", "dev", inner_side)
        ip("netns", "exec", name, "ip", "link", "set", inner_side, "up")
        page = StatusPage()
        page.publish(status_view(Status(stamp=time.time(), pipelines=[], transfers=[], links=[])))
        port = free_port()
        server = StatusServer(f"{prefix}.1", port, page, actions=None, token=TOKEN)
        import threading
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://{prefix}.1:{port}/api/status"
        result = subprocess.run(["ip", "netns", "exec", name, "python3", "-c", NAMESPACE_SCRIPT, url, TOKEN],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == [401, 401, 200]
        with pytest.raises(ValueError):  # and no server on such an address without a token
            StatusServer(f"{prefix}.1", free_port(), page, actions=None, token="")
    finally:
        if server:
            server.shutdown()
        subprocess.run(["ip", "link", "del", host_side], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
