"""A live run in hivelet's web page, in real headless Chromium: the run view follows the run
over GET /v1/runs/{id}/stream (read with fetch(), not polling).

Run by tests/it/stream.rs with BASE_URL, ADMIN_KEY, SCREENSHOT_DIR and:
  RUN_ID      a sync run of `chat` (template `intro`, streamed prompt `ask`, template `outro`)
              whose model holds its stream open until told
  READY_FILE  created here once the page shows the live run; the test then lets the model
              send "Hello" and " browser"
  DONE_FILE   created here once that text is on the page; the test then lets the run finish

Checks: the Live output panel shows the deltas while the run is still running, and the page
turns to the finished run (status, output, steps) when the stream's final event comes.
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
    visible,
    wait_until,
)

RUN_ID = env("RUN_ID")
READY_FILE = env("READY_FILE")
DONE_FILE = env("DONE_FILE")


def touch(path):
    with open(path, "w", encoding="utf-8") as f:
        f.write("ok")


def run(driver):
    sign_in(driver)
    open_run(driver, RUN_ID)
    check(text_of(driver, "#run-status") == "running", "the run is live")
    visible(driver, "#live-text", "the Live output panel")
    # Subscribed (the stream's response came) before the model may send anything.
    wait_until(
        driver,
        lambda d: d.execute_script(
            "const p = document.getElementById('run-live'); return p && p.dataset.stream"
        ) == "open",
        "the page to read the run's stream",
    )
    touch(READY_FILE)
    step("page open; the model may stream")

    wait_until(
        driver,
        lambda d: text_of(d, "#live-text") == "Hello browser",
        "the streamed text on the page",
    )
    check(text_of(driver, "#run-status") == "running", "the text came while the run ran")
    # The steps are redrawn a moment after the stream's `step.started` (the deltas may come
    # first), so wait for them rather than read them at once.
    progress = "return [...document.querySelectorAll('[data-testid=step]')].map(s => s.dataset.step + ':' + s.dataset.status)"
    wait_until(
        driver,
        lambda d: d.execute_script(progress) == ["intro:completed", "ask:running"],
        "step progress while live: intro completed, ask running",
    )
    label = text_of(driver, "#live-step")
    check("ask" in (label or ""), f"the panel names the step: {label!r}")
    screenshot(driver, "12-live-run")
    touch(DONE_FILE)

    wait_until(
        driver, lambda d: text_of(d, "#run-status") == "completed", "the run to finish on the page"
    )
    output = text_of(driver, "#run-output") or ""
    check("Hello browser!" in output, f"the output: {output!r}")
    check(not driver.find_elements("css selector", "#live-text"), "no live panel once finished")
    steps = driver.execute_script(
        "return [...document.querySelectorAll('[data-testid=step]')].map(s => s.dataset.step + ':' + s.dataset.status)"
    )
    check(
        steps == ["intro:completed", "ask:completed", "outro:completed"],
        f"the steps: {steps}",
    )
    step("the page followed the run to its end")


if __name__ == "__main__":
    main(run)
