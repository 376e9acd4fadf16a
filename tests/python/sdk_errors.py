"""The Fetch Hive Python SDK sees Fetch Hive's error answers.

Env: BASE_URL, API_KEY.
"""

import httpx
from fetch_hive_sdk import FetchHive

from _common import check, env, fail

base_url = env("BASE_URL")


def expect_error(call, status: int, message: str) -> None:
    try:
        result = call()
    except httpx.HTTPStatusError as err:
        response = err.response
        check(response.status_code == status, f"status {response.status_code}, want {status}: {response.text}")
        body = response.json()
        check(body.get("message") == message, f"message: {body!r}, want {message!r}")
        check(body.get("error") == message, f"error: {body!r}")
        return
    fail(f"expected HTTP {status}, got a result: {result!r}")


bad = FetchHive(api_key="hvk_wrong", base_url=base_url, timeout=30)
expect_error(lambda: bad.invoke_workflow(deployment="hello", inputs={"name": "Ada"}), 401, "Invalid access.")

good = FetchHive(api_key=env("API_KEY"), base_url=base_url, timeout=30)
expect_error(lambda: good.invoke_workflow(deployment="nope", inputs={"name": "Ada"}), 404, "Deployment not found.")
expect_error(
    lambda: good.invoke_workflow(deployment="hello", variant="nope", inputs={"name": "Ada"}), 404, "Variant not found."
)
expect_error(lambda: good.get_request("req_0123456789abcdef0123456789abcdef"), 404, "Request not found")

print("sdk errors ok")
