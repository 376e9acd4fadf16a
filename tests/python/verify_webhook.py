"""Verifies one delivered webhook with the official Standard Webhooks and Svix libraries and
checks the X-Fetch-Hive-Signature header.

Env: SECRET (whsec_...), BODY_FILE (the exact raw body bytes), HEADERS_FILE (JSON object of
the request headers as received), optional SKIP_FH_SIGNATURE=1 to check only the Standard
Webhooks header (for a rotated-out secret, which signs only that header).
"""

import hashlib
import hmac
import json
import os

import standardwebhooks
import svix.webhooks

from _common import check, env, fail

secret = env("SECRET")
with open(env("BODY_FILE"), "rb") as f:
    body = f.read()
with open(env("HEADERS_FILE"), encoding="utf-8") as f:
    headers = {k.lower(): v for k, v in json.load(f).items()}

try:
    payload = standardwebhooks.Webhook(secret).verify(body, dict(headers))
except Exception as err:  # noqa: BLE001 - report whatever the library raised
    fail(f"standardwebhooks rejected the delivery: {type(err).__name__}: {err}")
check(isinstance(payload, dict), f"payload: {payload!r}")

try:
    svix.webhooks.Webhook(secret).verify(body, dict(headers))
except Exception as err:  # noqa: BLE001
    fail(f"svix rejected the delivery: {type(err).__name__}: {err}")

if os.environ.get("SKIP_FH_SIGNATURE") != "1":
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    check(
        headers.get("x-fetch-hive-signature") == expected,
        f"X-Fetch-Hive-Signature {headers.get('x-fetch-hive-signature')!r}, want {expected!r}",
    )

# A tampered body must not verify.
try:
    standardwebhooks.Webhook(secret).verify(body + b" ", dict(headers))
except standardwebhooks.WebhookVerificationError:
    pass
else:
    fail("a tampered body verified")

print("webhook verified")
