#!/usr/bin/env python3
"""Checks jobtrack's OpenAPI document and real answers against it.

Usage: check_openapi.py SAMPLES.json

SAMPLES.json (written by tests/api/rest_openapi.rs) holds the document served at /api-docs and a
list of real exchanges with the running server: {"method", "path" (template), "status",
"headers", "body"} — or, for a watch (text/event-stream), "events": [{"event", "id", "data"}]
instead of "body". This script
  1. validates the document as OpenAPI 3.1 (openapi-spec-validator),
  2. checks that every exchange's operation and status are documented, that the response's
     required headers are present, and that its JSON body is valid against the documented schema
     (JSON Schema 2020-12, as OpenAPI 3.1 uses) — for an event stream, that each event's data is
     valid against the schema the media type names (x-jobtrack-event-data, x-jobtrack-error-data),
  3. checks that every documented operation, status and media type was exercised at least once.
Exit status 0 when everything holds; otherwise every problem is printed and the status is 1.
"""

import json
import sys

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_URI = "urn:jobtrack:openapi"


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        samples = json.load(f)
    spec = samples["document"]
    validate(spec)  # raises with a precise message when the document is not valid OpenAPI 3.1
    if not spec.get("openapi", "").startswith("3.1"):
        print(f"not OpenAPI 3.1: {spec.get('openapi')}")
        return 1

    registry = Registry().with_resource(
        SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012)
    )
    problems = []
    exercised = set()

    def resolve(node):
        while isinstance(node, dict) and "$ref" in node:
            node = registry.resolver(SPEC_URI).lookup(SPEC_URI + node["$ref"]).contents
        return node

    for sample in samples["exchanges"]:
        where = f"{sample['method']} {sample['path']} -> {sample['status']}"
        item = spec["paths"].get(sample["path"])
        operation = (item or {}).get(sample["method"].lower())
        if item is not None and operation is None and sample["status"] == 405:
            # Methods a path does not have are answered 405 with Allow, in the error envelope.
            if "allow" not in {k.lower() for k in sample["headers"]}:
                problems.append(f"{where}: no Allow header")
            validator = Draft202012Validator(
                {"$ref": f"{SPEC_URI}#/components/schemas/Error"}, registry=registry
            )
            problems.extend(f"{where}: {e.message}" for e in validator.iter_errors(sample["body"]))
            continue
        if operation is None:
            problems.append(f"{where}: operation not documented")
            continue
        response = operation["responses"].get(str(sample["status"]))
        if response is None:
            problems.append(f"{where}: status not documented")
            continue
        exercised.add((sample["path"], sample["method"].lower(), str(sample["status"])))
        response = resolve(response)
        headers = {k.lower(): v for k, v in sample["headers"].items()}
        for name, header in response.get("headers", {}).items():
            if resolve(header).get("required") and name.lower() not in headers:
                problems.append(f"{where}: required header {name} missing")
        content = response.get("content")
        media_type = headers.get("content-type", "").split(";")[0].strip()
        if media_type:
            exercised.add((sample["path"], sample["method"].lower(), str(sample["status"]), media_type))
        if media_type == "text/event-stream":
            media = (content or {}).get(media_type)
            if media is None:
                problems.append(f"{where}: an event stream where none is documented")
                continue
            events = sample.get("events") or []
            if not events:
                problems.append(f"{where}: no events recorded")
            for event in events:
                key = "x-jobtrack-error-data" if event["event"] == "error" else "x-jobtrack-event-data"
                validator = Draft202012Validator(
                    {"$ref": SPEC_URI + media[key]["$ref"]}, registry=registry
                )
                for error in validator.iter_errors(event["data"]):
                    problems.append(f"{where}: event {event['event']}: {error.message}")
                if event["event"] != "error":
                    if str(event["data"].get("type", "")).lower() != event["event"]:
                        problems.append(f"{where}: event {event['event']} with data type {event['data'].get('type')}")
                    if not event.get("id"):
                        problems.append(f"{where}: event {event['event']} without an id")
            continue
        body = sample.get("body")
        if content is None:
            if body is not None:
                problems.append(f"{where}: a body where none is documented")
            continue
        if body is None:
            if sample["method"] != "HEAD":
                problems.append(f"{where}: no body, but one is documented")
            continue
        pointer = (
            "#/paths/" + sample["path"].replace("~", "~0").replace("/", "~1")
            + f"/{sample['method'].lower()}/responses/{sample['status']}"
        )
        if "$ref" in operation["responses"][str(sample["status"])]:
            pointer = operation["responses"][str(sample["status"])]["$ref"]
        validator = Draft202012Validator(
            {"$ref": f"{SPEC_URI}{pointer}/content/application~1json/schema"},
            registry=registry,
        )
        for error in validator.iter_errors(body):
            path = "/".join(str(p) for p in error.absolute_path)
            problems.append(f"{where}: body at /{path}: {error.message}")

    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for status in operation["responses"]:
                if status in ("500", "503"):
                    continue  # server faults cannot be provoked from outside
                if (path, method, status) not in exercised:
                    problems.append(f"{method.upper()} {path} -> {status}: documented, never exercised")
                    continue
                for media_type in resolve(operation["responses"][status]).get("content", {}):
                    if method != "head" and (path, method, status, media_type) not in exercised:
                        problems.append(
                            f"{method.upper()} {path} -> {status} {media_type}: documented, never exercised"
                        )

    for problem in problems:
        print(problem)
    if not problems:
        print(f"OpenAPI 3.1 document valid; {len(samples['exchanges'])} real answers match it")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
