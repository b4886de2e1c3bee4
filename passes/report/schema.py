"""report.json's version and JSON Schema (passes/report/report_schema.json, docs/REPORT_SCHEMA.md).

Bump SCHEMA_VERSION when a field is removed or changes meaning; adding an optional field
does not need a bump (readers must ignore fields they do not know).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("report_schema.json")


@lru_cache(maxsize=1)
def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
