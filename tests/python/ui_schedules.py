"""The Schedules section of hivelet's web page, in real headless Chromium.

Run by tests/it/schedules.rs with BASE_URL, ADMIN_KEY, SCREENSHOT_DIR and SCHEDULE_ID (an
hourly, active schedule of `hello` that has not run yet).

Checks: the list shows the schedule with its timetable and next run; Pause and Resume change
it (and the API agrees); Run now starts a run, shown as the last run, whose link opens it.
"""

import json
import os
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ui_common import (  # noqa: E402
    BASE_URL,
    ADMIN_KEY,
    By,
    check,
    env,
    main,
    screenshot,
    sign_in,
    step,
    text_of,
    visible,
    wait_until,
)

SCHEDULE_ID = env("SCHEDULE_ID")
ROW = f"tr[data-schedule-id='{SCHEDULE_ID}']"


def api_schedule():
    req = urllib.request.Request(
        f"{BASE_URL}/v1/schedules/{SCHEDULE_ID}",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def cell(driver, testid):
    return text_of(driver, f"{ROW} [data-testid={testid}]")


def run(driver):
    sign_in(driver)
    driver.find_element(By.ID, "nav-schedules").click()
    visible(driver, ROW, "the schedule's row")
    row_text = text_of(driver, ROW)
    check("every 1h" in row_text and "hello" in row_text, f"row: {row_text!r}")
    check(cell(driver, "schedule-state") == "active", "listed as active")
    check(cell(driver, "schedule-next") not in (None, "", "—"), "a next run is shown")
    check(cell(driver, "schedule-last") == "never", "no run yet")
    screenshot(driver, "20-schedules")

    driver.find_element(By.CSS_SELECTOR, f"{ROW} [data-testid=pause-schedule]").click()
    wait_until(driver, lambda d: cell(d, "schedule-state") == "paused", "the schedule to pause")
    check(cell(driver, "schedule-next") == "—", "no next run while paused")
    check(api_schedule()["active"] is False, "the API says paused")
    step("paused")

    driver.find_element(By.CSS_SELECTOR, f"{ROW} [data-testid=resume-schedule]").click()
    wait_until(driver, lambda d: cell(d, "schedule-state") == "active", "the schedule to resume")
    check(api_schedule()["active"] is True, "the API says active")
    step("resumed")

    driver.find_element(By.CSS_SELECTOR, f"{ROW} [data-testid=trigger-schedule]").click()
    wait_until(driver, lambda d: (cell(d, "schedule-last") or "") != "never", "the last run")
    request_id = api_schedule()["last_run"]["request_id"]
    screenshot(driver, "21-schedule-ran")
    driver.find_element(By.CSS_SELECTOR, f"{ROW} [data-testid=schedule-last] a").click()
    wait_until(driver, lambda d: text_of(d, "#run-id") == request_id, "the triggered run's page")
    step("run now")


main(run)
