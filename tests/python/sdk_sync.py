"""The Fetch Hive Python SDK against hivelet, synchronous invoke and request lookup.

Env: BASE_URL (e.g. http://127.0.0.1:PORT/v1), API_KEY.
"""

from fetch_hive_sdk import FetchHive

from _common import REQUEST_ID, check, env

client = FetchHive(api_key=env("API_KEY"), base_url=env("BASE_URL"), timeout=30)

result = client.invoke_workflow(deployment="hello", inputs={"name": "Ada"})
check(result.get("run_status") == "completed", f"run_status: {result!r}")
check(result.get("output") == "Hello, Ada.", f"output: {result!r}")
request_id = result.get("request_id", "")
check(bool(REQUEST_ID.fullmatch(request_id)), f"request_id: {result!r}")

request = client.get_request(request_id)
check(request.get("request_id") == request_id, f"get_request request_id: {request!r}")
check(request.get("status") == "completed", f"get_request status: {request!r}")
check(request.get("request_type") == "workflow", f"get_request request_type: {request!r}")
check("Hello, Ada." in repr(request.get("data")), f"get_request data: {request!r}")

loud = client.invoke_workflow(
    deployment="hello",
    variant="loud",
    inputs={"name": "Ada"},
    user="customer-1",
    metadata={"order": "A-1", "count": 2, "gift": False, "note": None},
)
check(loud.get("output") == "Hello, Ada!!!", f"loud output: {loud!r}")
check(loud.get("request_id") != request_id, "each invoke gets a new request_id")

print("sdk sync ok")
