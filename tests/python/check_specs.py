"""Validate spec files against the generated JSON Schema with Python's `jsonschema`.

Usage: check_specs.py SCHEMA FILE... ; prints {"<file>": {"valid": bool, "errors": [...]}}
as JSON on stdout. It is what a pipeline written in Python would run, and the Rust tests
compare its verdicts with dp-models' own.
"""

import json
import sys

import jsonschema
import yaml


def load(path):
    with open(path, encoding="utf-8") as handle:
        if path.endswith(".json"):
            return json.load(handle)
        return yaml.safe_load(handle)


def main(argv):
    schema_path, files = argv[1], argv[2:]
    with open(schema_path, encoding="utf-8") as handle:
        schema = json.load(handle)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    report = {}
    for path in files:
        try:
            errors = sorted(
                ("/" + "/".join(str(p) for p in error.absolute_path), error.message)
                for error in validator.iter_errors(load(path))
            )
        except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            errors = [("", f"unreadable: {exc}")]
        report[path] = {"valid": not errors, "errors": [list(e) for e in errors]}
    json.dump(report, sys.stdout, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
