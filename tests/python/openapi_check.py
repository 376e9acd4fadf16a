"""Validates hivelet's /openapi.json as an OpenAPI 3 document, then checks real responses
against the schemas it declares for them.

Usage: openapi_check.py SPEC.json SAMPLES.json, where SAMPLES is a list of
{"method", "path" (the template, e.g. /v1/runs/{id}), "status", "body"}.
"""

import json
import sys

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from _common import check, fail


def response_schema(spec: dict, method: str, path: str, status: int) -> dict:
    operation = spec["paths"].get(path, {}).get(method.lower())
    check(operation is not None, f"{method} {path} is not documented")
    responses = operation["responses"]
    response = responses.get(str(status)) or responses.get("default")
    check(response is not None, f"{method} {path} does not document status {status}")
    content = response.get("content", {}).get("application/json")
    check(content is not None, f"{method} {path} {status}: no application/json body documented")
    return content["schema"]


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    with open(sys.argv[2]) as f:
        samples = json.load(f)
    try:
        validate(spec)
    except Exception as err:  # the validator's own exception types vary by version
        fail(f"not a valid OpenAPI document: {err}")
    check(spec["openapi"].startswith("3."), f"not OpenAPI 3: {spec['openapi']}")
    for sample in samples:
        schema = response_schema(spec, sample["method"], sample["path"], sample["status"])
        # `#/components/...` references resolve against this root document.
        root = dict(schema)
        root["components"] = spec["components"]
        errors = sorted(
            Draft202012Validator(root).iter_errors(sample["body"]), key=lambda e: list(e.path)
        )
        if errors:
            detail = "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
            fail(f"{sample['method']} {sample['path']} {sample['status']} does not match its schema: {detail}")
    print(f"ok: valid OpenAPI {spec['openapi']}, {len(samples)} responses match their schemas")


if __name__ == "__main__":
    main()
