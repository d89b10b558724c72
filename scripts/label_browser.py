"""Drive rlrun-label's page in a real headless Chromium (Selenium with the system's chromium-driver), as a person
would: read the question the page shows, press a button or a key, wait until the page shows the next one.

Used by tests/test_label_browser.py and scripts/label_session.py. Nothing here downloads a browser: the Chromium
and chromedriver of the system packages (``apt-get install chromium chromium-driver``) are used, or
:func:`browser_missing` says why not.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
KEYS = {1.0: "ARROW_LEFT", 0.0: "ARROW_RIGHT", 0.5: "="}  # the page's keys for left better, right better, tie
BUTTONS = {1.0: "left", 0.0: "right", 0.5: "equal"}
URL_LINE = re.compile(r"rlrun-label: open (\S+)")


def browser_missing() -> str | None:
    """Why no browser can be driven here (None when Selenium, Chromium and chromedriver are all present)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    if not any(shutil.which(name) for name in CHROMIUM):
        return "no Chromium on this machine (apt-get install chromium chromium-driver)"
    if not shutil.which("chromedriver"):
        return "no chromedriver on this machine (apt-get install chromium-driver)"
    return None


def start_server(source: str | Path, *args: str, timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """Start ``rlrun-label source --port 0 *args`` in its own process; returns (process, the URL it printed)."""
    process = subprocess.Popen([sys.executable, "-m", "rlrun.cli.label", str(source), "--port", "0", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if match := URL_LINE.search(line):
            return process, match.group(1)
    process.kill()
    raise RuntimeError("rlrun-label did not start:\n" + "".join(lines))


def kill(process: subprocess.Popen) -> None:
    """SIGKILL: the server gets no chance to tidy up (the worst case for losing answers)."""
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def open_browser(width: int = 1200, height: int = 800) -> Any:
    """A headless Chromium under Selenium, from the system packages."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(shutil.which(name) for name in CHROMIUM if shutil.which(name))
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def wait(driver: Any, condition, timeout: float = 20.0, what: str = "the page") -> Any:
    """Poll ``condition(driver)`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition(driver)
        if value:
            return value
        time.sleep(0.05)
    status = driver.find_element("id", "status").text
    raise TimeoutError(f"waited {timeout} s for {what}; the page says: {status!r}")


def shown_item(driver: Any) -> str:
    """The id of the question on the page ('' when there is none)."""
    return driver.find_element("id", "question").get_attribute("data-item") or ""


def clips_playing(driver: Any) -> bool:
    """Both clip canvases have drawn a frame (their data-frame attribute is set)."""
    return all(driver.find_element("id", c).get_attribute("data-frame") not in (None, "") for c in ("leftclip", "rightclip"))


def open_page(driver: Any, url: str, labeler: str) -> str:
    """Load the page, type the labeller's name, wait for the first question; returns its id."""
    driver.get(url)
    box = driver.find_element("id", "name")
    box.clear()
    box.send_keys(labeler)
    driver.find_element("tag name", "main").click()  # leave the name box, so keys reach the page
    return wait(driver, shown_item, what="the first question")


def answer(driver: Any, label: float, by: str = "click") -> str:
    """Answer the question shown with ``label`` (1 left better, 0 right better, 0.5 equally good) by clicking its
    button or pressing its key; waits until the page shows the next question (or none). Returns the id answered."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    item = shown_item(driver)
    if by == "click":
        driver.find_element("id", BUTTONS[float(label)]).click()
    else:
        key = KEYS[float(label)]
        ActionChains(driver).send_keys(getattr(Keys, key) if key.isupper() else key).perform()
    def moved_on(d: Any) -> bool:  # the next question is shown (or none is left) and the buttons work again
        return shown_item(d) != item and not d.find_element("id", "left").get_attribute("disabled")

    wait(driver, moved_on, what=f"the question after {item}")
    return item


def undo(driver: Any, by: str = "key") -> str:
    """Take back the latest answer (key U or the Undo button); returns the id the page shows again."""
    from selenium.webdriver.common.action_chains import ActionChains

    before = shown_item(driver)
    if by == "key":
        ActionChains(driver).send_keys("u").perform()
    else:
        driver.find_element("id", "undo").click()
    return wait(driver, lambda d: shown_item(d) if shown_item(d) != before else "", what="the undone question")


def progress(driver: Any) -> str:
    return driver.find_element("id", "progress").text
