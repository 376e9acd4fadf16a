"""Drives hivelet's web page in real headless Chromium (Selenium + chromedriver).

Run by tests/it/ui.rs with:
  BASE_URL        the daemon, e.g. http://127.0.0.1:41234
  ADMIN_KEY       an admin API key
  REQUEST_ID      an async run whose delivery failed twice (500, 500) and then succeeded (200)
  CALLBACK_URL    that run's callback URL
  SCREENSHOT_DIR  where to save one PNG per page

Checks: the key prompt, the Async badge in the runs table, the run's three attempts (500,
500, 200), Redeliver adding a fourth, the secret hidden until revealed, the code snippet
dialog with Async on (cURL with the `async` object and the callback URL, the `whsec_`
secret under it), and creating an API key (shown once).
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
from _common import check, env, fail  # noqa: E402

BASE_URL = env("BASE_URL").rstrip("/")
ADMIN_KEY = env("ADMIN_KEY")
REQUEST_ID = env("REQUEST_ID")
SCREENSHOT_DIR = env("SCREENSHOT_DIR")
CALLBACK_URL = os.environ.get("CALLBACK_URL") or "http://127.0.0.1:9/hooks"
SNIPPET_CALLBACK = "https://my-app.example/webhooks/hivelet"
WAIT = 20


def step(message):
    print(f"[ui_test] {message}", flush=True)


def make_driver(profile_dir):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
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
        "--window-size=1360,1000",
        f"--user-data-dir={profile_dir}",
    ]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Selenium Manager must not try to download a driver: Debian's is on disk.
    service = Service(executable_path="/usr/bin/chromedriver")
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(WAIT)
    return driver


def screenshot(driver, name):
    """Saves the whole page (the window grows to the page's height first)."""
    height = driver.execute_script(
        "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)"
    )
    driver.set_window_size(1360, max(1000, min(int(height) + 40, 6000)))
    time.sleep(0.2)
    path = os.path.join(SCREENSHOT_DIR, f"{name}.png")
    driver.save_screenshot(path)
    driver.set_window_size(1360, 1000)
    step(f"screenshot {path}")


def wait_until(driver, condition, what, timeout=WAIT):
    try:
        # Live views re-render while polling, so an element found a moment ago may be gone.
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


def attempts_data(driver):
    """(status code, series) of each attempt shown, read in one go (the view re-renders)."""
    return driver.execute_script(
        "return [...document.querySelectorAll('[data-testid=attempt]')]"
        ".map(e => [e.dataset.statusCode, e.dataset.series])"
    )


def attempt_codes(driver):
    return [code for code, _ in attempts_data(driver)]


def run(driver):
    # 1. The key prompt, once per session.
    driver.get(BASE_URL + "/")
    key_input = visible(driver, "#key-input", "the admin key prompt")
    screenshot(driver, "01-login")
    key_input.send_keys("hvk_not_a_real_key")
    driver.find_element(By.ID, "key-submit").click()
    error = visible(driver, "#login-error", "the error for a wrong key")
    check("not valid" in error.text, f"wrong key message: {error.text!r}")
    key_input.clear()
    key_input.send_keys(ADMIN_KEY)
    driver.find_element(By.ID, "key-submit").click()
    step("signed in")

    # 2. The runs table with the Async badge on the callback run.
    row_css = f"tr[data-request-id='{REQUEST_ID}']"
    row = visible(driver, row_css, "the async run in the runs table")
    badges = row.find_elements(By.CSS_SELECTOR, "[data-testid=async-badge]")
    check(len(badges) == 1 and badges[0].text == "Async", "the Async badge on the callback run")
    state = row.find_element(By.CSS_SELECTOR, "[data-testid=delivery-state]").text
    check(state == "delivered", f"delivery state in the table: {state!r}")
    rows = driver.find_elements(By.CSS_SELECTOR, "tr[data-testid=run-row]")
    check(len(rows) >= 2, f"both runs listed, saw {len(rows)}")
    direct = [r for r in rows if r.get_attribute("data-request-id") != REQUEST_ID]
    check(
        not direct[0].find_elements(By.CSS_SELECTOR, "[data-testid=async-badge]"),
        "no Async badge on a direct run",
    )
    # The key is kept for the session: a reload does not ask again.
    driver.refresh()
    visible(driver, row_css, "the runs table after a reload")
    check(not driver.find_element(By.ID, "login").is_displayed(), "no key prompt after reload")
    # Filters: delivery=direct hides the async run, delivery=callback shows it.
    driver.find_element(By.CSS_SELECTOR, "#filter-delivery option[value=direct]").click()
    driver.find_element(By.ID, "filter-apply").click()
    wait_until(
        driver,
        lambda d: "delivery=direct" in d.current_url
        and not d.find_elements(By.CSS_SELECTOR, row_css)
        and d.find_elements(By.CSS_SELECTOR, "tr[data-testid=run-row]"),
        "the delivery=direct filter",
    )
    driver.find_element(By.ID, "filter-clear").click()
    visible(driver, row_css, "the runs table after clearing filters")
    screenshot(driver, "02-runs")

    # 3. Paste the id to jump to the run.
    jump = driver.find_element(By.ID, "jump-input")
    jump.send_keys(f"  {REQUEST_ID} ")
    driver.find_element(By.ID, "jump-go").click()
    visible(driver, "#run-id", "the run detail")
    check(driver.find_element(By.ID, "run-id").text == REQUEST_ID, "the detail shows the run")
    driver.find_element(By.ID, "back-to-runs").click()
    # ... and open it from the table.
    visible(driver, row_css).click()
    visible(driver, "#webhook-logs", "the Webhook Logs")

    # 4. Async Configuration and three attempts: 500, 500, 200.
    config = driver.find_element(By.ID, "async-config").text
    check("Async Configuration" in config, "the Async Configuration section")
    check(CALLBACK_URL in config, f"callback URL in the Async Configuration: {config!r}")
    event_id = driver.find_element(By.ID, "async-event-id").text
    check(event_id.startswith("evt_"), f"event id: {event_id!r}")
    check(
        driver.find_element(By.ID, "async-delivery-state").text == "delivered",
        "delivery state delivered",
    )
    codes = wait_until(
        driver, lambda d: attempt_codes(d) if len(attempt_codes(d)) == 3 else False, "3 attempts"
    )
    check(codes == ["500", "500", "200"], f"attempt statuses: {codes}")
    attempts = driver.find_elements(By.CSS_SELECTOR, "[data-testid=attempt]")
    check("retry at" in attempts[0].text, "the first attempt shows its next retry time")
    # Expand the first attempt: headers and the response body.
    attempts[0].find_element(By.TAG_NAME, "summary").click()
    body = visible(driver, "[data-testid=attempt] [data-testid=response-body]", "a response body")
    check("temporarily down" in body.text, f"the 500's response body: {body.text!r}")
    detail = attempts[0].text.lower()
    check("request headers" in detail and "webhook-id" in detail, "the request headers")
    check("response headers" in detail, "the response headers")
    check("Hello, Ada." in driver.find_element(By.ID, "run-output").text, "the output")
    check("acme" in driver.find_element(By.ID, "run-metadata").text, "the metadata")
    steps = driver.find_elements(By.CSS_SELECTOR, "[data-testid=step]")
    check(len(steps) >= 1, "the step trace")
    check(not driver.find_elements(By.ID, "cancel-run"), "no Cancel on a finished run")
    screenshot(driver, "03-run")

    # 5. Redeliver: a fourth attempt (a new series) appears.
    driver.find_element(By.ID, "redeliver").click()
    shown = wait_until(
        driver,
        lambda d: (lambda a: a if len(a) >= 4 and a[3][0] else False)(attempts_data(d)),
        "a fourth attempt after Redeliver",
    )
    codes = [code for code, _ in shown]
    check(codes == ["500", "500", "200", "200"], f"attempt statuses after redeliver: {codes}")
    check(shown[3][1] == "2", f"the redelivery is series 2: {shown}")
    wait_until(
        driver,
        lambda d: d.find_element(By.ID, "async-delivery-state").text == "delivered",
        "delivered again",
    )
    screenshot(driver, "04-run-redelivered")

    # 6. Deployments: secret hidden until revealed, then the snippet dialog.
    driver.find_element(By.ID, "nav-deployments").click()
    card = visible(driver, "[data-deployment=hello]", "the hello deployment")
    secret = card.find_element(By.CSS_SELECTOR, "[data-testid=signing-secret]")
    check("whsec_" in secret.text and len(secret.text.replace("•", "")) <= 7, "secret hidden")
    card.find_element(By.CSS_SELECTOR, "[data-testid=reveal-secret]").click()
    revealed = secret.text
    check(revealed.startswith("whsec_") and "•" not in revealed, f"revealed secret: {revealed!r}")
    variants = [v.text.split()[0] for v in card.find_elements(By.CSS_SELECTOR, "[data-testid=variant]")]
    check({"default", "loud", "slow"} <= set(variants), f"variants: {variants}")
    card.find_element(By.CSS_SELECTOR, ".versions-box summary").click()
    visible(driver, "[data-deployment=hello] [data-testid=versions] li", "the versions")
    screenshot(driver, "05-deployments")

    card.find_element(By.CSS_SELECTOR, "[data-testid=open-snippet]").click()
    visible(driver, "#snippet-dialog", "the snippet dialog")
    wait_until(
        driver,
        lambda d: "/v1/workflow/invoke" in d.find_element(By.ID, "snippet-curl").text,
        "the sync cURL command",
    )
    curl = driver.find_element(By.ID, "snippet-curl").text
    check('"async"' not in curl, "no async object while Async is off")
    check(BASE_URL in curl, f"the command targets this daemon: {curl!r}")
    check(not driver.find_element(By.ID, "snippet-secret-box").is_displayed(), "secret hidden when sync")
    driver.find_element(By.CSS_SELECTOR, "#snippet-variant option[value=loud]").click()
    driver.find_element(By.ID, "snippet-async").click()
    callback = visible(driver, "#snippet-callback", "the callback URL field")
    callback.send_keys(SNIPPET_CALLBACK)
    wait_until(
        driver,
        lambda d: SNIPPET_CALLBACK in d.find_element(By.ID, "snippet-curl").text,
        "the async cURL command with the callback URL",
    )
    curl = driver.find_element(By.ID, "snippet-curl").text
    check('"async"' in curl, f"async object in the command: {curl!r}")
    check('"enabled": true' in curl, f"async enabled: {curl!r}")
    check('"variant": "loud"' in curl, f"the chosen variant: {curl!r}")
    secret_el = visible(driver, "#snippet-secret", "the signing secret under the command")
    check(secret_el.text.startswith("whsec_"), f"signing secret: {secret_el.text!r}")
    check(secret_el.text == revealed, "the dialog shows the deployment's secret")
    screenshot(driver, "06-snippet")
    driver.find_element(By.ID, "snippet-close").click()
    wait_until(
        driver, lambda d: not d.find_element(By.ID, "snippet-dialog").is_displayed(), "dialog closed"
    )

    # 7. API keys: create one, shown once.
    driver.find_element(By.ID, "nav-keys").click()
    visible(driver, "#keys-table", "the keys table")
    driver.find_element(By.ID, "key-name").send_keys("ui-test")
    driver.find_element(By.ID, "key-create").click()
    new_key = visible(driver, "#new-key-value", "the new key")
    check(new_key.text.startswith("hvk_"), f"new key: {new_key.text!r}")
    names = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "tr[data-testid=key-row]")]
    check(any("ui-test" in n for n in names), f"the new key is listed: {names}")
    check(all(new_key.text not in n for n in names), "the table shows keys masked")
    screenshot(driver, "07-keys")


def main():
    os.makedirs(SCREENSHOT_DIR, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="hivelet-ui-chromium-")
    driver = None
    try:
        driver = make_driver(profile)
        run(driver)
        errors = [
            entry
            for entry in driver.get_log("browser")
            if entry.get("level") == "SEVERE" and "hvk_not_a_real_key" not in entry.get("message", "")
            # The deliberately wrong key answers 401.
            and "401" not in entry.get("message", "")
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
    """On failure: a screenshot, the URL and the browser console."""
    try:
        driver.save_screenshot(os.path.join(SCREENSHOT_DIR, "failure.png"))
        print(f"URL at failure: {driver.current_url}", file=sys.stderr)
        for entry in driver.get_log("browser"):
            print(f"console: {entry}", file=sys.stderr)
    except Exception:  # noqa: BLE001
        pass


if __name__ == "__main__":
    main()
