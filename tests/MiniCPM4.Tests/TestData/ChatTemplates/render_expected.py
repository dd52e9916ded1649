#!/usr/bin/env python3
"""Writes expected/<template>.json: every template in templates/ rendered over every case of cases.json by Python's
Jinja2, the way Hugging Face transformers' apply_chat_template renders chat templates.

The C# tests (ChatTemplateCorpusTests) compare MiniCPM4.NET's renderer with these files byte for byte; they do not
run Python. Rerun this script after adding or changing a template or a case, then commit the results:

    python3 tests/MiniCPM4.Tests/TestData/ChatTemplates/render_expected.py

Needs Jinja2 (Debian: python3-jinja2). The committed files were made with Jinja2 3.1.6 on Python 3.11.

The environment is transformers' (_compile_jinja_template in transformers/utils/chat_template_utils.py):
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with the loop-controls extension and a
{% generation %} tag that renders its body; tojson is json.dumps(x, ensure_ascii=False, indent=None,
separators=None, sort_keys=False) with those keyword arguments open to the template; raise_exception raises with the
template's message; strftime_now formats a fixed time (cases.json "now") so that outputs do not depend on the day.
The variables are transformers': messages, tools (None when a case has none), documents (None),
add_generation_prompt, bos_token, eos_token, plus the case's extra keyword arguments (e.g. enable_thinking).
"""
import datetime
import json
import os
import sys

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))


class TemplateError(Exception):
    pass


class GenerationTag(jinja2.ext.Extension):
    """transformers' AssistantTracker tag without the mask bookkeeping: {% generation %}...{% endgeneration %}."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def make_environment(now):
    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return now.strftime(format)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    with open(os.path.join(HERE, "cases.json"), encoding="utf-8") as f:
        spec = json.load(f)
    now = datetime.datetime.fromisoformat(spec["now"])
    env = make_environment(now)
    template_dir = os.path.join(HERE, "templates")
    out_dir = os.path.join(HERE, "expected")
    os.makedirs(out_dir, exist_ok=True)
    names = sorted(n for n in os.listdir(template_dir) if n.endswith(".jinja"))
    for name in names:
        with open(os.path.join(template_dir, name), encoding="utf-8", newline="") as f:
            source = f.read()
        template = env.from_string(source)
        results = {}
        for case in spec["cases"]:
            variables = {
                "messages": case["messages"],
                "tools": case.get("tools"),
                "documents": None,
                "add_generation_prompt": case["add_generation_prompt"],
                "bos_token": spec["bos_token"],
                "eos_token": spec["eos_token"],
            }
            variables.update(case.get("kwargs", {}))
            try:
                results[case["name"]] = {"output": template.render(**variables)}
            except TemplateError as e:
                results[case["name"]] = {"error": "raise_exception", "message": str(e)}
            except Exception as e:  # noqa: BLE001 - any other failure is part of the expectation
                results[case["name"]] = {"error": type(e).__name__, "message": str(e)}
        with open(os.path.join(out_dir, name[: -len(".jinja")] + ".json"), "w", encoding="utf-8", newline="\n") as f:
            json.dump(results, f, ensure_ascii=False, indent=1, sort_keys=True)
            f.write("\n")
        failed = sum(1 for r in results.values() if "error" in r)
        print(f"{name}: {len(results) - failed} rendered, {failed} raised", file=sys.stderr)


if __name__ == "__main__":
    main()
