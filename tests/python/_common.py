"""Shared helpers for the scripts the Rust integration tests run."""

import os
import re
import sys

REQUEST_ID = re.compile(r"req_[0-9a-f]{32}")


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        fail(f"environment variable {name} is not set")
    return value


def fail(message: str) -> None:
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition: bool, message: str) -> None:
    if not condition:
        fail(message)
