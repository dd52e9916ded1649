#!/usr/bin/env python3
"""End-to-end structured output: JSON Schemas from JSONSchemaBench generated with `minicpm4 generate --json-schema`.

Usage: scripts/structured-output-e2e.py JSONSCHEMABENCH_DATA_DIR [--count 200] [--cli PATH] [--model DIR] [--out FILE]

JSONSCHEMABENCH_DATA_DIR is the `data/` folder of github.com/guidance-ai/jsonschemabench (public; fetch it, do not
commit it). The schemas are taken evenly from its subsets (sorted names, every k-th file), each generated once
(the demo model by default, temperature 0.8, seed = its index, at most 512 tokens), and each finished output is
checked by an independent validator: Python's jsonschema with format checking, under the schema's own $schema
draft. A schema the engine cannot enforce is a compile error (exit code 2), counted apart; an output cut off by
the token budget is counted as incomplete.
"""
import argparse, json, os, subprocess, sys

import jsonschema

SUBSETS = ["Glaiveai2K", "Github_trivial", "Github_easy", "Github_medium", "Github_hard", "Kubernetes",
           "Snowplow", "JsonSchemaStore", "WashingtonPost"]


def pick(data_dir, count):
    subsets = [s for s in SUBSETS if os.path.isdir(os.path.join(data_dir, s))]
    per = -(-count // len(subsets))
    chosen = []
    for s in subsets:
        files = sorted(f for f in os.listdir(os.path.join(data_dir, s)) if f.endswith(".json"))
        step = max(1, len(files) // per)
        chosen += [os.path.join(data_dir, s, f) for f in files[::step][:per]]
    return chosen[:count]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--cli", default="src/MiniCPM4.Cli/bin/Release/net10.0/minicpm4")
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=None, help="write one JSON line per schema here")
    a = ap.parse_args()
    out = open(a.out, "w", encoding="utf-8") if a.out else None
    totals = {"schemas": 0, "compile_error": 0, "finished": 0, "valid": 0, "invalid": 0, "incomplete": 0}
    for i, path in enumerate(pick(a.data_dir, a.count)):
        totals["schemas"] += 1
        schema = json.load(open(path, encoding="utf-8"))
        args = [a.cli, "generate", "-p", "JSON:", "--json-schema", path, "--max-tokens", "512",
                "--temperature", "0.8", "--seed", str(i), "--json", "--device", "cpu"]
        if a.model: args += ["-m", a.model]
        p = subprocess.run(args, capture_output=True, text=True)
        row = {"schema": os.path.relpath(path, a.data_dir)}
        if p.returncode == 2:
            totals["compile_error"] += 1
            row["compile_error"] = p.stderr.strip()
        elif p.returncode != 0:
            sys.exit(f"{path}: minicpm4 failed ({p.returncode}): {p.stderr.strip()}")
        else:
            result = json.loads(p.stdout)
            row["finish"] = result["finish_reason"]
            row["text"] = result["text"]
            if result["finish_reason"] != "stop":
                totals["incomplete"] += 1
            else:
                totals["finished"] += 1
                cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
                try:
                    errors = list(cls(schema, format_checker=cls.FORMAT_CHECKER).iter_errors(json.loads(result["text"])))
                except json.JSONDecodeError as e:
                    errors = [f"not JSON: {e}"]
                row["valid"] = not errors
                totals["valid" if not errors else "invalid"] += 1
                if errors: row["errors"] = [str(e)[:300] for e in errors[:3]]
        if out: out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(json.dumps(totals))
    return 0 if totals["invalid"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
