"""Approval steps and cancelling in hivelet's web page, in real headless Chromium.

Run by tests/it/ui.rs with BASE_URL, ADMIN_KEY, SCREENSHOT_DIR and three async runs that wait
at an approval step:
  CHOICE_ID   question "Pay 42 EUR?" with the choices yes / "No way"
  TEXT_ID     an approval without choices (answered with free text)
  CANCEL_ID   another run like CHOICE_ID, to be cancelled

Checks: live runs show as running; the question and its choices; answering with a choice or
with text lets the run finish with that answer; Cancel ends a waiting run as cancelled.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ui_common import (  # noqa: E402
    EC,
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

CHOICE_ID = env("CHOICE_ID")
TEXT_ID = env("TEXT_ID")
CANCEL_ID = env("CANCEL_ID")


def run_status(driver):
    return text_of(driver, "#run-status")


def run(driver):
    sign_in(driver)

    # The runs table shows the three waiting runs as running.
    visible(driver, f"tr[data-request-id='{CANCEL_ID}']", "the waiting runs in the table")
    statuses = driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('tr[data-testid=run-row]')]"
        ".map(r => [r.dataset.requestId, r.dataset.status]))"
    )
    for rid in (CHOICE_ID, TEXT_ID, CANCEL_ID):
        check(statuses.get(rid) == "running", f"{rid} listed as running: {statuses}")
    screenshot(driver, "08-runs-live")

    # A question with choices.
    open_run(driver, CHOICE_ID)
    box = visible(driver, "#approval", "the approval box")
    question = text_of(driver, "[data-testid=approval-question]")
    check(question == "Pay 42 EUR?", f"question: {question!r}")
    labels = [b.text for b in box.find_elements(By.CSS_SELECTOR, "[data-testid=approval-choice]")]
    check(labels == ["yes", "No way"], f"choices: {labels}")
    waiting = driver.execute_script(
        "return [...document.querySelectorAll('[data-testid=step]')].map(s => s.dataset.status)"
    )
    check("waiting" in waiting, f"the waterfall shows the waiting step: {waiting}")
    check(bool(driver.find_elements(By.ID, "cancel-run")), "a running run can be cancelled")
    screenshot(driver, "09-approval")
    driver.find_element(By.CSS_SELECTOR, "[data-testid=approval-choice][data-choice=no]").click()
    wait_until(driver, lambda d: run_status(d) == "completed", "the run to finish after the answer")
    output = text_of(driver, "#run-output")
    check("Pay 42 EUR: no (No way" in output, f"output uses the answer: {output!r}")
    check(not driver.find_elements(By.ID, "approval"), "no approval box once answered")
    check(not driver.find_elements(By.ID, "cancel-run"), "no Cancel once finished")
    step("answered with a choice")

    # Free text.
    open_run(driver, TEXT_ID)
    visible(driver, "#approval-text", "the free-text answer box").send_keys("Looks good")
    driver.find_element(By.ID, "approval-submit").click()
    wait_until(driver, lambda d: run_status(d) == "completed", "the text-answered run to finish")
    output = text_of(driver, "#run-output")
    check("Looks good" in output, f"output uses the text: {output!r}")
    step("answered with text")

    # Cancel a waiting run (after the confirmation prompt).
    open_run(driver, CANCEL_ID)
    visible(driver, "#cancel-run", "the Cancel button").click()
    wait_until(driver, EC.alert_is_present(), "the confirmation prompt").accept()
    wait_until(driver, lambda d: run_status(d) == "cancelled", "the run to be cancelled")
    check(not driver.find_elements(By.ID, "approval"), "no approval box once cancelled")
    screenshot(driver, "10-cancelled")
    step("cancelled")


if __name__ == "__main__":
    main(run)
