"""mkdocs hook: the pages generated at build time, so none of them is a hand-kept copy.

- ``reference/config.md``: every config key from the JSON Schema
  (:func:`bench.run.config_schema.config_schema`, the one ``poisonbench schema`` prints) with
  its type, allowed values, default and description;
- ``reference/plugins.md``: every built-in dataset, model, attack and defense with its
  parameters (type, allowed values and default from the same schema, the meaning from the
  class docstring's ``param: meaning`` lines);
- ``reference/api/*.md``: one mkdocstrings block per public module of the packages, found by
  walking the source tree (a new module is documented the build after it lands).
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]

#: API pages: page -> (title, the packages or modules it renders, in order)
API_PAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "poisonbench": ("API: poisonbench", ("poisonbench.api", "poisonbench.testing")),
    "core": ("API: bench.core", ("bench.core",)),
    "data-models": ("API: bench.data and bench.models", ("bench.data", "bench.models")),
    "run": ("API: bench.run", ("bench.run",)),
    "analysis": ("API: bench.analysis", ("bench.analysis",)),
    "interfaces": ("API: bench.interfaces", ("bench.interfaces",)),
    "plugins": ("API: attacks and defenses", ("attacks", "defenses")),
}

#: where the user guide explains a top-level key (links only; the facts come from the schema)
GUIDE = {
    "name": "../guide/configs.md",
    "description": "../guide/configs.md",
    "datasets": "../guide/own-data.md",
    "models": "../guide/own-data.md#models-by-import-path",
    "attacks": "plugins.md#attacks",
    "rates": "../guide/configs.md",
    "defenses": "plugins.md#defenses",
    "seeds": "../guide/configs.md",
    "recovery": "../guide/headline-report.md",
    "data_dir": "../guide/images.md",
    "timeout": "../guide/errors.md",
    "plugins": "../plugins.md",
    "exclude": "../guide/configs.md",
}

KINDS = (("datasets", "Datasets"), ("models", "Models"), ("attacks", "Attacks"),
         ("defenses", "Defenses"))  # fmt: skip


def _code(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return f"`{text}`"


def type_text(schema: dict[str, Any]) -> str:
    """A short reading of a JSON Schema: ``integer ≥ 1 or number in (0, 1)``."""
    if not schema:
        return "any"
    if "const" in schema:
        return _code(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(_code(v) for v in schema["enum"])
    if "anyOf" in schema:
        seen: list[str] = []
        for option in schema["anyOf"]:
            text = type_text(option)
            if text not in seen:
                seen.append(text)
        return " or ".join(seen)
    kind = schema.get("type", "any")
    bounds = []
    if "minimum" in schema:
        bounds.append(f"≥ {schema['minimum']}")
    if "exclusiveMinimum" in schema:
        bounds.append(f"> {schema['exclusiveMinimum']}")
    if "maximum" in schema:
        bounds.append(f"≤ {schema['maximum']}")
    if "exclusiveMaximum" in schema:
        bounds.append(f"< {schema['exclusiveMaximum']}")
    if "pattern" in schema:
        bounds.append(f"matching `{schema['pattern']}`")
    if kind == "array":
        items = schema.get("items")
        text = f"list of {type_text(items)}" if items else "list"
        if schema.get("minItems"):
            text += f" (at least {schema['minItems']})"
        if schema.get("uniqueItems"):
            text += " (distinct)"
        return text
    if kind == "object":
        return "mapping"
    return f"{kind} {' and '.join(bounds)}".strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _is_plugin_entry(schema: dict[str, Any]) -> bool:
    options = schema.get("anyOf", [])
    return (
        bool(options)
        and "enum" in options[0]
        and all(o.get("properties", {}).get("name", {}).get("const") for o in options[1:])
    )


def code_default(path: str) -> str:
    """The default the config parser fills in where the schema states none (``recovery.*``:
    the fields of :class:`bench.run.config.RecoverySpec`)."""
    import dataclasses

    from bench.run.config import RecoverySpec

    section, _, key = path.partition(".")
    if section != "recovery" or not key:
        return ""
    fields = {f.name: f for f in dataclasses.fields(RecoverySpec)}
    if key not in fields or fields[key].default is dataclasses.MISSING:
        return ""
    value = fields[key].default
    return _code(list(value) if isinstance(value, tuple) else value)


def key_rows(prefix: str, schema: dict[str, Any], required: set[str]) -> list[str]:
    """Table rows for the keys of an object schema, nested objects flattened."""
    rows = []
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if _is_plugin_entry(sub.get("items", {})) or _is_plugin_entry(
            sub.get("items", {}).get("anyOf", [{}])[0]
        ):
            kind = key if key in dict(KINDS) else "defenses"
            kind_type = (
                f"list of names or `{{name: ..., parameter: value}}` mappings "
                f"([the built-in {kind}](plugins.md#{kind}))"
            )
            if key == "defenses":
                kind_type += "; an entry may be a list of steps (a pipeline)"
            typ = kind_type
        else:
            typ = type_text(sub)
        default = _code(sub["default"]) if "default" in sub else code_default(path)
        note = sub.get("description", "")
        where = GUIDE.get(path)
        if where:
            note = (note + " " if note else "") + f"[guide]({where})"
        flag = "yes" if key in required else ""
        rows.append(f"| `{path}` | {_cell(typ)} | {default} | {flag} | {_cell(note)} |")
        nested = [o for o in sub.get("anyOf", []) if o.get("type") == "object"]
        if sub.get("type") == "object" and sub.get("properties"):
            nested.append(sub)
        if sub.get("type") == "array" and sub.get("items", {}).get("properties"):
            rows += key_rows(f"{path}[].", sub["items"], set(sub["items"].get("required", [])))
        for obj in nested:
            if obj.get("properties"):
                rows += key_rows(f"{path}.", obj, set(obj.get("required", [])))
    return rows


def config_page(schema: dict[str, Any]) -> str:
    head = (
        "# Config reference\n\n"
        "Generated at build time from the config's JSON Schema "
        "([`config_schema`][bench.run.config_schema.config_schema], the schema "
        "`poisonbench schema` prints and `configs/poisonbench.schema.json` ships), so it lists "
        "exactly what the code accepts. The schema describes the shape; "
        "[`parse_config`][bench.run.config.parse_config] also checks what a schema cannot (a "
        "class that must exist in the dataset, a split larger than the data) and names the "
        "field path in every error. The user guide's [Configs](../guide/configs.md) page "
        "explains the keys with examples; [Built-in plug-ins](plugins.md) lists every "
        "dataset, model, attack and defense with its parameters.\n\n"
        "Keys of a nested mapping are written with dots (`recovery.metric`), keys of a "
        "list's mappings with `[]` (`exclude[].dataset`).\n\n"
        "| key | type and allowed values | default | required | description |\n"
        "|---|---|---|---|---|\n"
    )
    rows = key_rows("", schema, set(schema.get("required", [])))
    return head + "\n".join(rows) + "\n"


#: a Sphinx role (``:func:`name```): shown as inline code on the generated pages
ROLE = re.compile(r":(?:py:)?[a-z]+:`~?([^`]+)`")


def param_docs(doc: str) -> dict[str, str]:
    """``{param: meaning}`` from a docstring's ``name: meaning`` (or ``a, b: meaning``) lines."""
    doc = ROLE.sub(r"`\1`", doc)
    out: dict[str, str] = {}
    current: list[str] = []
    for line in inspect.cleandoc(doc).splitlines():
        match = re.match(r"^([a-z_][a-z0-9_]*(?:,\s*[a-z_][a-z0-9_]*)*):\s+(\S.*)$", line)
        if match:
            current = [n.strip() for n in match.group(1).split(",")]
            for name in current:
                out[name] = match.group(2).strip()
        elif current and line.startswith(" ") and line.strip():
            for name in current:
                out[name] += " " + line.strip()
        else:
            current = []
    return out


def flat_params(params: dict[str, Any], prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    """``(key, schema)`` pairs, the keys of a nested mapping (``split.train``) after it."""
    out = []
    for key, sub in params.items():
        out.append((prefix + key, sub))
        if sub.get("type") == "object" and sub.get("properties"):
            out += flat_params(sub["properties"], f"{prefix}{key}.")
    return out


def plugins_page(schema: dict[str, Any]) -> str:
    from attacks import ATTACKS
    from bench.data.datasets import DATASETS
    from bench.models import MODELS
    from defenses import DEFENSES

    registries = {"datasets": DATASETS, "models": MODELS, "attacks": ATTACKS,
                  "defenses": DEFENSES}  # fmt: skip
    lines = [
        "# Built-in plug-ins",
        "",
        "Generated at build time from the registries and the config schema: every built-in "
        "plug-in, the parameters a config may give it (`{name: ..., parameter: value}`), "
        "their types, allowed values and defaults, and what they mean (the class docstring). "
        "`poisonbench list` prints the same for whatever is installed, your own plug-ins "
        "included; the [plug-in guide](../plugins.md) shows how to add one.",
        "",
    ]
    for kind, title in KINDS:
        items = schema["properties"][kind]["items"]
        if kind == "defenses":
            items = items["anyOf"][0]
        entries = {o["properties"]["name"]["const"]: o for o in items["anyOf"][1:]}
        lines += [f"## {title}", ""]
        lines.append(", ".join(f"[`{n}`](#{kind}-{n.replace('_', '-')})" for n in entries))
        lines.append("")
        for name, entry in entries.items():
            cls = registries[kind].get(name)
            meaning: dict[str, str] = {}
            for base in reversed(cls.__mro__):  # a base class documents the shared parameters
                meaning.update(param_docs(base.__dict__.get("__doc__") or ""))
            where = f"{cls.__module__}.{cls.__qualname__}"
            # a link where the API pages render the class (a class made at run time has none)
            source = inspect.getsource(inspect.getmodule(cls))
            defined = re.search(rf"^class {re.escape(cls.__qualname__)}\b", source, flags=re.M)
            shown = f"[`{where}`][{where}]" if defined else f"`{where}`"
            lines += [f"### `{name}` {{ #{kind}-{name.replace('_', '-')} }}", ""]
            lines += [entry.get("description", ""), "", f"Class: {shown}.", ""]
            params = {k: v for k, v in entry["properties"].items() if k != "name"}
            if not params:
                lines += ["No parameters.", ""]
                continue
            lines += ["| parameter | type and allowed values | default | meaning |",
                      "|---|---|---|---|"]  # fmt: skip
            for key, sub in flat_params(params):
                default = _code(sub["default"]) if "default" in sub else ""
                text = sub.get("description") or meaning.get(key, "")
                lines.append(
                    f"| `{key}` | {_cell(type_text(sub))} | {_cell(default)} | {_cell(text)} |"
                )
            lines.append("")
    return "\n".join(lines) + "\n"


def public_modules(package: str) -> list[str]:
    """``package`` and its public submodules (no ``_`` name), in file-tree order."""
    path = ROOT / package.replace(".", "/")
    if path.with_suffix(".py").is_file():
        return [package]
    out = [package]
    for child in sorted(path.iterdir()):
        name = child.stem
        if name.startswith("_") or not name.isidentifier():
            continue
        if child.is_dir() and (child / "__init__.py").is_file():
            out += public_modules(f"{package}.{name}")
        elif child.suffix == ".py":
            out.append(f"{package}.{name}")
    return out


def api_page(title: str, roots: tuple[str, ...]) -> str:
    lines = [f"# {title}", ""]
    if roots[0].startswith("poisonbench"):
        lines += poisonbench_names()
    for root in roots:
        for module in public_modules(root):
            lines += [f"::: {module}", ""]
    return "\n".join(lines) + "\n"


def poisonbench_names() -> list[str]:
    """The ``poisonbench`` package: its docstring and where each public name is defined."""
    import poisonbench

    lines = [(poisonbench.__doc__ or "").strip().split("\n\n")[0], ""]
    lines += ["`import poisonbench as pb` exposes these names (each imported on first use):", ""]
    lines += ["| name | defined as |", "|---|---|"]
    import griffe

    lazy: dict[str, tuple[str, str]] = poisonbench._LAZY
    loaded = {p: griffe.load(p, search_paths=[str(ROOT)]) for p in ("attacks", "bench", "defenses")}
    for name in poisonbench.__all__:
        if name not in lazy:
            lines.append(f"| `pb.{name}` | `poisonbench.{name}` |")
            continue
        module, attr = lazy[name]
        if module.startswith("poisonbench"):
            path = f"{module}.{attr}"
        else:  # the object where it is defined, not where a package re-exports it
            found = loaded[module.split(".")[0]].get_member(
                f"{module}.{attr}".split(".", 1)[1] if "." in module else attr
            )
            path = found.final_target.path if found.is_alias else found.path
        lines.append(f"| `pb.{name}` | [`{module}.{attr}`][{path}] |")
    return [*lines, ""]


def on_files(files: Files, config: Any) -> Files:
    import sys

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.run.config_schema import config_schema

    schema = config_schema(builtin_only=True)
    pages = {
        "reference/config.md": config_page(schema),
        "reference/plugins.md": plugins_page(schema),
    }
    for slug, (title, roots) in API_PAGES.items():
        pages[f"reference/api/{slug}.md"] = api_page(title, roots)
    for path, content in pages.items():
        files.append(File.generated(config, path, content=content))
    return files


def contracts_text() -> str:
    """The import-linter contracts of ``pyproject.toml``, as a list."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    lines = []
    for contract in config["contracts"]:
        lines.append(f"- **{contract['name']}** (`{contract['type']}`)")
        if contract["type"] == "layers":
            lines.append("    - layers, top to bottom: " + " > ".join(
                f"`{layer}`" for layer in contract["layers"]))  # fmt: skip
        elif "source_modules" in contract:
            source = ", ".join(f"`{m}`" for m in contract["source_modules"])
            forbidden = ", ".join(f"`{m}`" for m in contract["forbidden_modules"])
            lines.append(f"    - {source} may not import {forbidden}")
        else:
            roots = ", ".join(f"`{m}`" for m in contract.get("ancestors", []))
            lines.append(
                f"    - no two sibling modules under {roots} import each other in a circle"
            )
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if "<!-- import-contracts -->" in markdown:
        markdown = markdown.replace("<!-- import-contracts -->", contracts_text())
    return markdown
