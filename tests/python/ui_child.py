"""Child runs (`workflow` steps) in hivelet's web page, in real headless Chromium.

Run by tests/it/ui.rs with BASE_URL, ADMIN_KEY, SCREENSHOT_DIR and:
  PARENT_ID   a run whose `workflow` step `sub` waits for its child (held in an http step)
  CHILD_ID    that child run

Checks: the parent's step shows as waiting with a link to the child, and no approval box (a
child run is not a question for a person); the child's page shows its source and links back
to the parent; the runs table filters by source `workflow`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ui_common import (  # noqa: E402
    BASE_URL,
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

PARENT_ID = env("PARENT_ID")
CHILD_ID = env("CHILD_ID")


def run(driver):
    sign_in(driver)

    open_run(driver, PARENT_ID)
    visible(driver, "[data-testid=step][data-step=sub]", "the workflow step")
    status = driver.execute_script(
        "return document.querySelector('[data-testid=step][data-step=sub]').dataset.status"
    )
    check(status == "waiting", f"the step waits for its child: {status}")
    check(not driver.find_elements("css selector", "#approval"), "no approval box")
    href = driver.execute_script(
        "const a = document.querySelector('[data-step=sub] [data-testid=child-run]');"
        " return a ? a.getAttribute('href') : null"
    )
    check(href == f"#/runs/{CHILD_ID}", f"the step links to its child: {href!r}")
    screenshot(driver, "11-parent-waiting-on-child")
    step("parent links to its child")

    driver.get(f"{BASE_URL}/{href}")
    wait_until(driver, lambda d: text_of(d, "#run-id") == CHILD_ID, "the child's page")
    summary = text_of(driver, "#run-summary") or ""
    check("workflow" in summary, f"source workflow: {summary!r}")
    check(PARENT_ID in summary, f"the child names its parent: {summary!r}")
    step("child links to its parent")

    driver.get(f"{BASE_URL}/#/runs?source=workflow")
    visible(driver, f"tr[data-request-id='{CHILD_ID}']", "the child in the filtered table")
    rows = driver.execute_script(
        "return [...document.querySelectorAll('tr[data-testid=run-row]')].map(r => r.dataset.requestId)"
    )
    check(rows == [CHILD_ID], f"only the child run has source workflow: {rows}")
    step("filtered by source")


if __name__ == "__main__":
    main(run)
