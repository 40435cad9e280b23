"""docs/method.md stays true to the code: its preset table, parameter counts and code references."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from training.config import list_presets, resolve_config

METHOD = Path(__file__).resolve().parents[1] / "docs" / "method.md"


def _section(name: str) -> str:
    text = METHOD.read_text(encoding="utf-8")
    start = text.index(f"## {name}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def _preset_rows() -> tuple[list[str], dict[str, list[str]]]:
    """Column presets and ``{field: cells}`` of the rows that name exactly one config field."""
    lines = [line for line in _section("Presets").splitlines() if line.startswith("|")]
    presets = [c.strip() for c in lines[0].strip("|").split("|")[1:]]
    rows = {}
    for line in lines[2:]:
        first, *cells = (c.strip() for c in line.strip("|").split("|"))
        names = re.findall(r"`(\w+)`", first)
        if len(names) == 1:
            rows[names[0]] = cells
    return presets, rows


def _same(cell: str, value) -> bool:
    if value is None:
        return cell == "none"
    if isinstance(value, float):
        return float(cell) == pytest.approx(value)
    return cell == str(value)


def test_the_preset_table_lists_every_preset_with_its_values():
    presets, rows = _preset_rows()
    assert sorted(presets) == list_presets()
    assert {
        "frames",
        "words",
        "caption_words",
        "batch_size",
        "lr",
        "epochs",
        "warmup_ratio",
        "precision",
        "reference_world_size",
        "decode_short_side",
    } <= set(rows)
    for preset, column in zip(presets, zip(*rows.values(), strict=True), strict=True):
        cfg = resolve_config(preset)
        for field, cell in zip(rows, column, strict=True):
            cell = {"same": rows[field][0], "off": ""}.get(cell, cell)
            assert _same(cell, getattr(cfg, field)), (
                f"docs/method.md Presets: {field} of {preset} is {cell!r}"
            )


def test_parameter_counts_are_the_models():
    """The table's counts are what the code builds: the ViT-B-32 defaults' adapter groups, counted on
    the meta device (shapes only, no weights, under a second)."""
    import torch

    from training.model import DiscoVLAConfig, build_model

    with torch.device("meta"):
        groups = build_model(DiscoVLAConfig(backbone="ViT-B-32", pretrained=None), "meta").parameter_groups()
    section = _section("Backbone and what trains")
    names = {
        "vision LoRA": "vision_lora",
        "vision adapters": "vision_adapters",
        "text LoRA": "text_lora",
        "text adapters": "text_adapters",
    }
    for row, group in names.items():
        assert re.search(rf"\| {row} \|[^|]+\| {groups[group]:,} \|", section), (
            f"docs/method.md 'Backbone and what trains': the {row} row should say {groups[group]:,}"
        )
    assert f"**{sum(groups.values()):,}**" in section, f"the total should read **{sum(groups.values()):,}**"


def test_every_code_reference_exists():
    """``path.py:name`` and ``path.py:Class.method`` references name real modules and attributes."""
    refs = set(re.findall(r"`([\w/]+)\.py:([\w.]+)`", METHOD.read_text(encoding="utf-8")))
    assert len(refs) > 20
    for path, dotted in sorted(refs):
        obj = importlib.import_module(path.replace("/", "."))
        for part in dotted.split("."):
            assert hasattr(obj, part), f"docs/method.md cites {path}.py:{dotted}"
            obj = getattr(obj, part)


def test_benchmarks_search_docstring_names_its_real_flags():
    """Every ``--flag`` that benchmarks/search.py's docstring names is one of its parser's flags."""
    from benchmarks import search as bench

    named = set(re.findall(r"(--[a-z][a-z-]*)", bench.__doc__))
    real = {s for a in bench.build_parser()._actions for s in a.option_strings}
    assert named and not named - real, f"benchmarks/search.py's docstring names {sorted(named - real)}"
    assert real - named <= {"-h", "--help"}, f"undocumented flags: {sorted(real - named - {'-h', '--help'})}"


def test_the_readme_names_every_benchmark():
    root = METHOD.parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Layout and speed") :]
    missing = sorted(p.name for p in (root / "benchmarks").glob("*.py") if f"`{p.name}`" not in section)
    assert not missing, f"README 'Layout and speed' does not name benchmarks {missing}"


PACKAGES = ("pipelines", "shared", "captioning", "training", "search", "demo")  # benchmarks: the README


def _architecture_blocks() -> dict[str, str]:
    """ARCHITECTURE.md's module map: package name -> its lines (the package line and the indented ones)."""
    text = (METHOD.parents[1] / "ARCHITECTURE.md").read_text(encoding="utf-8").split("```")[1]
    blocks: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        top = re.match(r"^(\w+)/\s", line)
        if top:
            current = top.group(1)
            blocks[current] = [line]
        elif current:
            blocks[current].append(line)
    return {name: "\n".join(lines) for name, lines in blocks.items()}


def _first_docstring_line(path: Path) -> str:
    import ast

    doc = (
        ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "(no docstring: say what it is for)"
    )
    return doc.strip().splitlines()[0]


def _subpackage_lines(body: str, sub: str) -> str:
    """The line of ``sub/`` in a package's block and its continuation lines (indented deeper)."""
    found, inside = [], False
    for line in body.splitlines():
        if re.match(rf"^\s+{sub}/\s", line):
            inside = True
        elif not re.match(r"^\s{6,}\S", line):
            inside = False
        if inside:
            found.append(line)
    return " ".join(found)


def test_architecture_lists_every_module():
    """Every module of every package is in ARCHITECTURE.md's map: ``name.py`` under its package, or its
    name on the line of its sub-package (``shards/ ...: schema, writer, ...``)."""
    root = METHOD.parents[1]
    blocks = _architecture_blocks()
    missing = []
    for package in PACKAGES:
        body = blocks.get(package, "")
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root / package)
            if path.name == "__init__.py" or "__pycache__" in rel.parts:
                continue
            if len(rel.parts) == 1:
                named = re.search(rf"(?<![\w/]){re.escape(path.name)}\b", body)
                line = f"  {path.name:<16} {_first_docstring_line(path)}"
            else:
                lines = _subpackage_lines(body, rel.parts[0])
                named = re.search(rf"\b{re.escape(path.stem)}\b", lines)
                line = f"  on the '{rel.parts[0]}/' line: {path.stem} ({_first_docstring_line(path)})"
            if not named:
                missing.append(f"under '{package}/':{line}")
    assert not missing, "ARCHITECTURE.md's module map lacks these modules; add:\n" + "\n".join(missing)
