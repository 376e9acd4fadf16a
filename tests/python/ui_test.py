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
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ui_common import (  # noqa: E402
    ADMIN_KEY,
    BASE_URL,
    By,
    check,
    env,
    main,
    screenshot,
    step,
    text_of,
    visible,
    wait_until,
)

REQUEST_ID = env("REQUEST_ID")
CALLBACK_URL = env("CALLBACK_URL")
SNIPPET_CALLBACK = "https://my-app.example/webhooks/hivelet"


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

    # 2. The runs table with the Async badge on the callback run (read in one go: the
    # table refreshes itself).
    row_css = f"tr[data-request-id='{REQUEST_ID}']"
    visible(driver, row_css, "the async run in the runs table")
    rows = driver.execute_script(
        "return [...document.querySelectorAll('tr[data-testid=run-row]')].map(r => ({"
        " id: r.dataset.requestId,"
        " badges: [...r.querySelectorAll('[data-testid=async-badge]')].map(b => b.innerText),"
        " delivery: (r.querySelector('[data-testid=delivery-state]') || {}).innerText || null"
        "}))"
    )
    check(len(rows) >= 2, f"both runs listed: {rows}")
    mine = [r for r in rows if r["id"] == REQUEST_ID]
    check(len(mine) == 1 and mine[0]["badges"] == ["Async"], f"the Async badge: {rows}")
    check(mine[0]["delivery"] == "delivered", f"delivery state in the table: {rows}")
    direct = [r for r in rows if r["id"] != REQUEST_ID]
    check(not direct[0]["badges"] and not direct[0]["delivery"], f"a direct run: {rows}")
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
        lambda d: text_of(d, "#async-delivery-state") == "delivered",
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


if __name__ == "__main__":
    main(run)
