"""The Python anchor of `cargo xtask bench catalog`: what a Python user would do to load and
validate the catalog -- PyYAML on every spec file, then jsonschema against the schema this
project generates (specs/schema/model-spec.schema.json), plus the duplicate-name check.

Runs in .dp-assets/venv (xtask/requirements/python-test.txt). In the anchor's favour: PyYAML's
C loader (libyaml) when the wheel has it, and the validator (with its compiled schema) built
once, outside the timing. Prints one JSON object: median seconds per load of --loads loads,
after one unmeasured load.

Usage: catalog_anchor.py --schema FILE --catalog DIR [--loads N]
"""

import argparse
import importlib.metadata
import json
import pathlib
import statistics
import sys
import time

import jsonschema
import yaml


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--schema", required=True)
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--loads", type=int, default=3)
    args = parser.parse_args()

    schema = json.loads(pathlib.Path(args.schema).read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    root = pathlib.Path(args.catalog)

    def load() -> float:
        start = time.perf_counter()
        names = {}
        for path in sorted(root.glob("*/*.yaml")):
            with open(path, encoding="utf-8") as f:
                spec = yaml.load(f, Loader=loader)
            errors = list(validator.iter_errors(spec))
            if errors:
                raise SystemExit(f"{path}: {errors[0].message}")
            if spec["model_name"] in names:
                raise SystemExit(f"{path}: duplicate model_name {spec['model_name']}")
            names[spec["model_name"]] = spec
        elapsed = time.perf_counter() - start
        if len(names) != 1000:
            raise SystemExit(f"expected 1000 specs, found {len(names)}")
        return elapsed

    load()
    loads = [load() for _ in range(max(args.loads, 1))]
    json.dump(
        {
            "load_validate_s": statistics.median(loads),
            "yaml_loader": loader.__name__,
            "jsonschema": importlib.metadata.version("jsonschema"),
            "python": sys.version.split()[0],
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
