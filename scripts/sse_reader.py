#!/usr/bin/env python3
"""A Server-Sent Events reader with nothing but Python's standard library, as a script would
write one: follows URL and prints each event as one line of JSON ({"id", "event", "data"}).

    python3 scripts/sse_reader.py 'http://127.0.0.1:8080/api/v1/jobs?watch=1' [LAST_EVENT_ID]
"""

import json
import sys
import urllib.request


def main(url: str, last_event_id: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Accept": "text/event-stream"})
    if last_event_id:
        request.add_header("Last-Event-ID", last_event_id)
    with urllib.request.urlopen(request) as response:
        event: dict[str, str] = {}
        for raw in response:
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line:
                if "event" in event:
                    out = dict(event, data=json.loads(event.get("data", "null")))
                    print(json.dumps(out), flush=True)
                event = {}
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            event[field] = value[1:] if value.startswith(" ") else value
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
