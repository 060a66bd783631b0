#!/usr/bin/env python3
"""Checks flowtel's Datadog monitor definitions against Datadog's own API
client (datadog-api-client, requirements.txt), offline: each file must load
into the client's v1 Monitor model with type checking, hold only keys the
model knows and none the API sets itself (id, created, ...), name what a
create request needs, and agree with itself (the threshold in the query is
options.thresholds.critical, warning on the right side of it).

    python3 otel-config/datadog/validate_monitors.py [FILE.json ...]

Without arguments: every otel-config/datadog/monitors/*.json. Prints one
line per monitor; exits 1 with the reasons if any monitor is wrong.
"""

import glob
import json
import os
import re
import sys

from datadog_api_client import Configuration
from datadog_api_client.model_utils import (
    ModelNormal,
    OpenApiModel,
    UnparsedObject,
    validate_and_convert_types,
)
from datadog_api_client.v1.model.monitor import Monitor

MONITORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "monitors")

# What POST /api/v1/monitor needs (the API sets the rest).
REQUIRED = ("name", "type", "query", "message")

# A metric monitor's query: aggregation over a window, then the expression,
# then a comparison with the critical threshold.
QUERY = re.compile(
    r"^(avg|sum|min|max|change|pct_change)\(last_\d+[mhdw]\):(?P<expr>.+) "
    r"(?P<op><=|>=|<|>) (?P<threshold>-?\d+(\.\d+)?)$"
)


def unknown(data, model, path):
    """What in `data` (JSON) `model` does not know, recursively through the
    nested models: keys its class does not define, and values the client
    kept unparsed (it does so, for forward compatibility, with an enum value
    it does not know, such as a misspelt monitor type)."""
    found = []
    known = {json_name: attr for attr, json_name in type(model).attribute_map.items()}
    for key, value in data.items():
        where = f"{path}.{key}"
        if key not in known:
            found.append(f"unknown key {where}")
            continue
        inner = getattr(model, known[key])
        unparsed = isinstance(inner, UnparsedObject) or (
            isinstance(inner, OpenApiModel) and inner._unparsed
        )
        if unparsed and not isinstance(inner, ModelNormal):
            found.append(f"{where}: {value!r} is not a value the API knows")
            continue
        if isinstance(value, dict) and isinstance(inner, ModelNormal):
            found += unknown(value, inner, where)
        elif isinstance(value, list):
            for i, (v, m) in enumerate(zip(value, inner)):
                if isinstance(v, dict) and isinstance(m, ModelNormal):
                    found += unknown(v, m, f"{where}[{i}]")
                elif isinstance(m, OpenApiModel) and m._unparsed:
                    found.append(f"{where}[{i}]: {v!r} is not a value the API knows")
    return found


def problems(data, name):
    """What is wrong with one monitor definition (empty when nothing)."""
    if not isinstance(data, dict):
        return ["not a JSON object"]
    try:
        monitor = validate_and_convert_types(
            data, (Monitor,), [name], True, True, configuration=Configuration()
        )
    except Exception as e:  # the client's ApiTypeError, ApiValueError, ...
        return [f"does not load into datadog_api_client.v1.model.monitor.Monitor: {e}"]
    found = unknown(data, monitor, "")
    if monitor._unparsed and not found:
        found.append("the client could not parse all of it")
    found += [f"{k} is set by the API, not by a definition" for k in Monitor.read_only_vars if k in data]
    found += [f"{k} missing" for k in REQUIRED if k not in data]
    query = QUERY.match(data.get("query", ""))
    if not query:
        return found + [f"query is not AGG(last_N):EXPR OP THRESHOLD: {data.get('query')!r}"]
    thresholds = data.get("options", {}).get("thresholds", {})
    critical = float(query["threshold"])
    if thresholds.get("critical") != critical:
        found.append(f"options.thresholds.critical {thresholds.get('critical')} is not the query's {critical}")
    warning = thresholds.get("warning")
    if warning is not None:
        above = query["op"] in (">", ">=")
        if (warning >= critical) if above else (warning <= critical):
            found.append(f"warning {warning} is beyond critical {critical} for {query['op']}")
    return found


def main(paths):
    paths = paths or sorted(glob.glob(os.path.join(MONITORS, "*.json")))
    if not paths:
        print(f"no monitor definitions in {MONITORS}", file=sys.stderr)
        return 1
    failed = 0
    for path in paths:
        name = os.path.basename(path)
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                found = [f"not JSON: {e}"]
            else:
                found = problems(data, name)
        if found:
            failed += 1
            for p in found:
                print(f"FAIL {name}: {p}")
        else:
            print(f"ok   {name}: {data['type']}: {data['query']}")
    print(f"{len(paths) - failed} of {len(paths)} monitors valid")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
