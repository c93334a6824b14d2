"""A griffe extension: the docstrings' Sphinx roles (``:func:`name```) as mkdocstrings links.

The code's docstrings cite each other the Sphinx way (``:func:`estimate_recovery```,
``:class:`~bench.core.types.EnsemblePlan```, ``:data:`GROUP_COLUMNS```), which griffe leaves
as literal text. After a package is loaded this extension rewrites every role in every
docstring: a target that resolves (as written, then relative to the object, its class and
its module) to an object that the API pages render becomes an autorefs cross-reference
(``[`name`][bench.analysis.recovery.estimate_recovery]``); any other target (a private helper,
a name in another library) becomes inline code. So every link it writes has a target, and
``mkdocs build --strict`` still fails on a cross-reference written by hand that has none.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

#: ``:role:`target``` and ``:py:role:`target```; a ``~`` shows only the last component
ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const|type):`([^`]+)`")
#: the packages whose public modules the API pages render (docs/hooks/config_reference.py)
RENDERED_PACKAGES = ("bench", "attacks", "defenses", "poisonbench")


def rendered(obj: griffe.Object | griffe.Alias) -> bool:
    """Whether the API pages render ``obj`` under its own path (so autorefs has an anchor)."""
    if obj.is_alias:
        return False
    parts = obj.path.split(".")
    if parts[0] not in RENDERED_PACKAGES or any(p.startswith("_") for p in parts):
        return False
    node: Any = obj
    while node.parent is not None:  # only module and class members get a heading
        if not (node.parent.is_module or node.parent.is_class):
            return False
        node = node.parent
    return True


def _lookup(collection: griffe.ModulesCollection, path: str) -> griffe.Object | None:
    try:
        found = collection.get_member(path)
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    if found.is_alias:  # an import: link to what it names, where that is rendered
        try:
            found = found.final_target
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None
    return found


def resolve(obj: griffe.Object, target: str) -> griffe.Object | None:
    """The object a role in ``obj``'s docstring names, or None."""
    collection = obj.modules_collection
    scopes: list[str] = [""]
    node: Any = obj
    while node is not None:  # the object itself, its class, its module, its packages
        scopes.append(node.path + ".")
        node = node.parent
    for scope in scopes:
        found = _lookup(collection, scope + target)
        if found is not None:
            return found
    return None


def rewrite(obj: griffe.Object, text: str) -> str:
    """``text`` with each role replaced by a cross-reference or inline code."""

    def sub(match: re.Match[str]) -> str:
        target = match.group(1).strip()
        short = target.startswith("~")
        target = target.lstrip("~").removesuffix("()")
        shown = target.rsplit(".", 1)[-1] if short else target
        found = resolve(obj, target)
        if found is not None and rendered(found):
            return f"[`{shown}`][{found.path}]"
        return f"`{shown}`"

    return ROLE.sub(sub, text)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = rewrite(obj, obj.docstring.value)
            stack.extend(m for m in obj.members.values() if not m.is_alias)
