"""Flow control on hivelet's web page, in real headless Chromium.

Run by tests/it/ui.rs with BASE_URL, ADMIN_KEY, SCREENSHOT_DIR and RUN_ID: a run invoked with
priority 7 and metadata customer "acme" (the deployment's concurrency key), whose prompt step
waits for provider capacity.

Checks: the run's summary shows its priority and concurrency key, and its waiting step says it
waits for provider capacity.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ui_common import (  # noqa: E402
    check,
    env,
    main,
    open_run,
    screenshot,
    sign_in,
    step,
    text_of,
    wait_until,
)

RUN_ID = env("RUN_ID")


def waiting_reason(driver):
    return driver.execute_script(
        "const e = document.querySelector('[data-testid=step][data-status=waiting] "
        "[data-testid=step-waiting-reason]'); return e ? e.textContent : null"
    )


def run(driver):
    sign_in(driver)
    open_run(driver, RUN_ID)
    wait_until(driver, lambda d: text_of(d, "#run-priority") == "7", "the run's priority")
    key = text_of(driver, "#run-concurrency-key")
    check(key == "acme", f"concurrency key: {key!r}")
    wait_until(
        driver,
        lambda d: "provider capacity" in (waiting_reason(d) or ""),
        "the waiting step's reason",
    )
    screenshot(driver, "13-flow-control")
    step("priority, key and the capacity wait shown")


if __name__ == "__main__":
    main(run)
