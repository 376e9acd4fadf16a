"""Shared Selenium helpers for the browser tests (ui_test.py, ui_approval.py).

Chromium and chromedriver are Debian's (`chromium`, `chromium-driver`, installed by .ci/run);
Selenium Manager is never asked to download anything.
"""

import os
import shutil
import sys
import tempfile
import time
import traceback

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import check, env, fail  # noqa: E402,F401  (re-exported for the scripts)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1360, 1000
WAIT = 20

BASE_URL = env("BASE_URL").rstrip("/")
ADMIN_KEY = env("ADMIN_KEY")
SCREENSHOT_DIR = env("SCREENSHOT_DIR")


def step(message):
    name = os.path.basename(sys.argv[0])
    print(f"[{name}] {message}", flush=True)


def make_driver(profile_dir):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--window-size={WIDTH},{HEIGHT}",
        f"--user-data-dir={profile_dir}",
    ]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    return driver


def screenshot(driver, name):
    """Saves the whole page: the window grows to the page's height first."""
    driver.execute_script("window.scrollTo(0, 0)")
    height = driver.execute_script(
        "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)"
    )
    # The window's outer height includes a little chrome even when headless.
    driver.set_window_size(WIDTH, max(HEIGHT, min(int(height) + 160, 8000)))
    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.2)
    path = os.path.join(SCREENSHOT_DIR, f"{name}.png")
    driver.save_screenshot(path)
    driver.set_window_size(WIDTH, HEIGHT)
    step(f"screenshot {path}")


def wait_until(driver, condition, what, timeout=WAIT):
    try:
        # Live views re-render while they poll, so an element found a moment ago may be gone.
        return WebDriverWait(
            driver,
            timeout,
            poll_frequency=0.1,
            ignored_exceptions=[StaleElementReferenceException],
        ).until(condition)
    except TimeoutException:
        fail(f"timed out after {timeout}s waiting for {what}")


def visible(driver, css, what=None):
    return wait_until(
        driver, EC.visibility_of_element_located((By.CSS_SELECTOR, css)), what or css
    )


def text_of(driver, css):
    """The text of the element matching `css` now (None if absent), read in one go."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : null", css
    )


def sign_in(driver, key=None):
    driver.get(BASE_URL + "/")
    key_input = visible(driver, "#key-input", "the admin key prompt")
    key_input.send_keys(key or ADMIN_KEY)
    driver.find_element(By.ID, "key-submit").click()
    wait_until(
        driver, lambda d: not d.find_element(By.ID, "login").is_displayed(), "signing in"
    )
    step("signed in")


def open_run(driver, request_id):
    """Opens a run through the paste-an-id box."""
    box = driver.find_element(By.ID, "jump-input")
    box.clear()
    box.send_keys(request_id)
    driver.find_element(By.ID, "jump-go").click()
    wait_until(driver, lambda d: text_of(d, "#run-id") == request_id, f"run {request_id}")


def main(run):
    """Runs `run(driver)` in a fresh headless Chromium; exits 1 with a screenshot, the URL
    and the browser console on any failure."""
    os.makedirs(SCREENSHOT_DIR, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="hivelet-ui-chromium-")
    driver = None
    try:
        driver = make_driver(profile)
        run(driver)
        errors = [
            entry
            for entry in driver.get_log("browser")
            if entry.get("level") == "SEVERE"
            # Wrong keys are tried on purpose; their 401 is logged as a failed resource.
            and "status of 401" not in entry.get("message", "")
        ]
        check(not errors, f"errors in the browser console: {errors}")
        step("ok")
    except SystemExit:
        if driver is not None:
            dump(driver)
        raise
    except Exception:  # noqa: BLE001 - report anything with the page's state
        traceback.print_exc()
        if driver is not None:
            dump(driver)
        sys.exit(1)
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def dump(driver):
    name = os.path.splitext(os.path.basename(sys.argv[0]))[0]
    try:
        path = os.path.join(SCREENSHOT_DIR, f"failure-{name}.png")
        driver.save_screenshot(path)
        print(f"failure screenshot: {path}", file=sys.stderr)
        print(f"URL at failure: {driver.current_url}", file=sys.stderr)
        for entry in driver.get_log("browser"):
            print(f"console: {entry}", file=sys.stderr)
    except Exception:  # noqa: BLE001
        pass


__all__ = [
    "By",
    "EC",
    "check",
    "env",
    "fail",
    "main",
    "open_run",
    "screenshot",
    "sign_in",
    "step",
    "text_of",
    "visible",
    "wait_until",
    "BASE_URL",
    "ADMIN_KEY",
]
