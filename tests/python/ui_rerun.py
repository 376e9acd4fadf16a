"""Rerunning a run from hivelet's web page, in real headless Chromium.

Run by tests/it/ui.rs with BASE_URL, ADMIN_KEY, SCREENSHOT_DIR and RUN_ID: a completed run
of a workflow with the top-level steps `a`, `b` and `c`.

Checks: the Rerun picker offers "from the start" (the default) and each top-level step; a
rerun from `c` opens the new run, which shows `a` and `b` as reused, `c` completed, and links
back to the earlier run.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ui_common import (  # noqa: E402
    By,
    check,
    env,
    main,
    open_run,
    screenshot,
    sign_in,
    step,
    text_of,
    visible,
    wait_until,
)

RUN_ID = env("RUN_ID")


def statuses(driver):
    return driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('[data-testid=step]')]"
        ".map(s => [s.dataset.step, s.dataset.status]))"
    )


def run(driver):
    sign_in(driver)
    open_run(driver, RUN_ID)
    picker = visible(driver, "#rerun-from", "the rerun step picker")
    options = [(o.get_attribute("value"), o.text) for o in picker.find_elements(By.TAG_NAME, "option")]
    check(
        options == [("", "from the start"), ("a", "from a"), ("b", "from b"), ("c", "from c")],
        f"options: {options}",
    )
    check(picker.get_attribute("value") == "", "from the start is the default")
    screenshot(driver, "11-rerun-picker")

    picker.find_element(By.CSS_SELECTOR, "option[value=c]").click()
    driver.find_element(By.ID, "rerun-run").click()
    wait_until(
        driver,
        lambda d: (text_of(d, "#run-id") or RUN_ID) != RUN_ID,
        "the page to open the new run",
    )
    new_id = text_of(driver, "#run-id")
    check(driver.current_url.endswith(f"#/runs/{new_id}"), f"url: {driver.current_url}")
    wait_until(driver, lambda d: text_of(d, "#run-status") == "completed", "the rerun to complete")
    wait_until(
        driver,
        lambda d: statuses(d) == {"a": "reused", "b": "reused", "c": "completed"},
        "a and b reused, c run again",
    )
    rerun_of = text_of(driver, "#run-rerun-of")
    check(rerun_of == RUN_ID, f"links back to the earlier run: {rerun_of!r}")
    screenshot(driver, "12-rerun")
    print(f"NEW_RUN_ID={new_id}", flush=True)
    step("rerun from c")


if __name__ == "__main__":
    main(run)
