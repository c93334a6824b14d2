"""The docs site: ``mkdocs build --strict`` passes, its generated pages say what the code holds,
and a broken link, anchor or API cross-reference fails the build (so ``make docs`` can fail)."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import require

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _docs_tools() -> None:
    """mkdocs and mkdocstrings come with the dev extra: skipped locally, failed under CI=true."""
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        require(module)


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
         "--site-dir", str(site)],
        cwd=config.parent, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def page_text(path: Path) -> str:
    """A built page's text, tags stripped and entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text()))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    result = mkdocs_build(ROOT / "mkdocs.yml", site)
    assert result.returncode == 0, result.stderr[-4000:]
    return site


def test_every_nav_page_is_built(site):
    config = (ROOT / "mkdocs.yml").read_text()
    pages = re.findall(r":\s*([\w/.-]+\.md)\s*$", config, flags=re.M)
    assert len(pages) > 25
    missing = [p for p in pages if not (site / p.replace(".md", ".html")).is_file()]
    assert not missing


def test_config_reference_lists_every_schema_key(site):
    from bench.run.config_schema import config_schema

    schema = config_schema(builtin_only=True)
    text = page_text(site / "reference" / "config.html")
    keys = list(schema["properties"])
    keys += [f"recovery.{k}" for k in schema["properties"]["recovery"]["properties"]]
    missing = [k for k in keys if k not in text]
    assert not missing, f"keys missing from the config reference: {missing}"
    for metric in schema["properties"]["recovery"]["properties"]["metric"]["enum"]:
        assert f'"{metric}"' in text  # the allowed values
    # the defaults the parser fills in where the schema has none
    from bench.run.config import RecoverySpec

    row = text.split("recovery.tolerance", 1)[1][:200]
    assert str(RecoverySpec().tolerance) in row


def test_plugin_reference_lists_every_builtin_with_its_parameters(site):
    import dataclasses

    from attacks import ATTACKS
    from bench.core.types import BUILTIN, init_fields
    from defenses import DEFENSES

    page = (site / "reference" / "plugins.html").read_text()
    for kind, registry in (("attacks", ATTACKS), ("defenses", DEFENSES)):
        for name in registry:
            if registry.origin(name) != BUILTIN:
                continue
            anchor = f'id="{kind}-{name.replace("_", "-")}"'
            assert anchor in page, f"{kind} {name} has no section"
            section = page.split(anchor, 1)[1].split("<h3", 1)[0]
            cls = registry.get(name)
            fields = init_fields(cls) if dataclasses.is_dataclass(cls) else []
            for field in fields:
                assert f"<code>{field.name}</code>" in section, f"{name}.{field.name}"


def test_api_reference_renders_docstrings_and_their_roles(site):
    api = site / "reference" / "api"
    analysis = (api / "analysis.html").read_text()
    assert 'id="bench.analysis.recovery.estimate_recovery"' in analysis
    # The docstrings' Sphinx roles become links or code, never literal ":func:`...`" text.
    role = re.compile(r":(func|class|meth|mod|attr|data|exc|obj):(`|<code>)")
    leftovers = [
        str(p.relative_to(site)) for p in site.rglob("*.html") if role.search(p.read_text())
    ]
    assert not leftovers, f"Sphinx roles left as text in {leftovers}"
    # A role whose target is rendered became a link to it.
    assert 'href="#bench.analysis.stats.paired_difference"' in analysis


def test_architecture_page_holds_the_import_contracts(site):
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    text = page_text(site / "architecture.html")
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    for contract in contracts["contracts"]:
        assert contract["name"] in text


def _tiny_project(root: Path, page: str) -> Path:
    """A two-page site with the repository's link validation and cross-reference plug-ins."""
    settings = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    docs = root / "docs"
    docs.mkdir(parents=True)
    (docs / "index.md").write_text("# Home\n\n## Section\n\nSee [the other page](other.md).\n")
    (docs / "other.md").write_text(f"# Other\n\n{page}\n")
    config = {
        "site_name": "tiny",
        "validation": settings["validation"],
        "plugins": [p for p in settings["plugins"] if p == "autorefs" or "autorefs" in p],
        "markdown_extensions": settings["markdown_extensions"],
    }
    path = root / "mkdocs.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("page", "complaint"),
    [
        ("[gone](missing.md)", "missing.md"),
        ("[no anchor](index.md#no-such-section)", "no-such-section"),
        ("[nothing][bench.no_such_module.no_such_function]", "bench.no_such_module"),
    ],
    ids=["link", "anchor", "cross-reference"],
)
def test_a_broken_reference_fails_the_build(tmp_path, page, complaint):
    good = _tiny_project(tmp_path / "good", "[a section](index.md#section)")
    assert mkdocs_build(good, tmp_path / "good-site").returncode == 0
    bad = _tiny_project(tmp_path / "bad", page)
    result = mkdocs_build(bad, tmp_path / "bad-site")
    assert result.returncode != 0
    assert complaint in result.stderr


def test_readme_links_point_at_files_that_exist():
    """The README is read on GitHub, outside the site: its relative links must name real files."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if "://" not in link]
    assert len(local) > 20
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"
