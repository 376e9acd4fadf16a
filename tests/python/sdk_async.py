"""The Fetch Hive Python SDK starts an async run and polls it to completion.

Env: BASE_URL, API_KEY, CALLBACK_URL.
"""

import time

from fetch_hive_sdk import FetchHive

from _common import REQUEST_ID, check, env, fail

client = FetchHive(api_key=env("API_KEY"), base_url=env("BASE_URL"), timeout=30)

started = client.invoke_workflow(
    deployment="hello", inputs={"name": "Ada"}, async_mode=True, callback_url=env("CALLBACK_URL")
)
check(started.get("run_status") in ("running", "queued"), f"async run_status: {started!r}")
check("output" not in started or started.get("output") is None, f"async reply carries no output: {started!r}")
request_id = started.get("request_id", "")
check(bool(REQUEST_ID.fullmatch(request_id)), f"request_id: {started!r}")

deadline = time.monotonic() + 10
while True:
    request = client.get_request(request_id)
    if request.get("status") == "completed":
        break
    check(request.get("status") in ("queued", "running"), f"unexpected status: {request!r}")
    if time.monotonic() > deadline:
        fail(f"run did not complete within 10 s: {request!r}")
    time.sleep(0.05)

check("Hello, Ada." in repr(request.get("data")), f"data: {request!r}")
print("sdk async ok")
