#!/usr/bin/env python3
"""Parses an OpenMetrics exposition (stdin) with the Prometheus project's own parser and prints
its families as JSON: {name: {"type": ..., "help": ..., "samples": [[name, labels, value]]}}.
A page the parser refuses exits non-zero with the parser's message (tests/api/server.rs)."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

families = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = {
        "type": family.type,
        "help": family.documentation,
        "samples": [[s.name, s.labels, s.value] for s in family.samples],
    }
json.dump(families, sys.stdout)
