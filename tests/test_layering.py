"""The layering contract of docs/architecture.md ("Layering"), enforced over every module's imports.

Each rule is data: who imports, what it may not import (or the only modules of a package it may import).
Imports count wherever they appear, inside functions too: a deferred import still ties the packages
together. Each rule is also run against a synthetic tree that breaks it, so none can pass vacuously.
The deeper keyring check (nothing a gateway module imports may load the federation secret, even
indirectly) is `tests/test_tokens.py`'s.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "aggregation", "privacy", "audit", "connectors")


@dataclass(frozen=True)
class Rule:
    """`importer` must not import `imported`, except the modules in `only` when that is given."""

    importer: str
    imported: str
    only: frozenset[str] | None = None

    @property
    def name(self) -> str:
        return f"{self.importer} -> {self.imported}"

    def breaks(self, module: str) -> bool:
        if not _within(module, self.imported):
            return False
        return self.only is None or not any(_within(module, allowed) for allowed in self.only)


RULES = (
    # The gateway takes from connectors/ only what both sides share or what runs a connector beside it.
    Rule(
        "gateway",
        "connectors",
        only=frozenset(
            {
                "connectors.vocabulary",
                "connectors.canonical",
                "connectors.query",
                "connectors.query_scope",
                "connectors.protocol",
                "connectors.coverage",
                "connectors.config",
                "connectors.body_limit",
                "connectors.cli",
                "connectors.keys_cli",
                "connectors.process",
                "connectors.logs",
                "connectors.synth",
            }
        ),
    ),
    Rule("gateway", "connectors.federation_keys"),
    Rule("aggregation", "gateway"),
    Rule("aggregation", "audit"),
    Rule(
        "aggregation",
        "connectors",
        only=frozenset(
            {
                "connectors.vocabulary",
                "connectors.canonical",
                "connectors.query",
                "connectors.query_scope",
                "connectors.protocol",
                "connectors.config",
            }
        ),
    ),
    # The shared vocabulary and canonical bytes are leaves, the query model needs only them, and the wire
    # protocol does not depend on a connector's configuration.
    Rule("connectors.vocabulary", "connectors"),
    Rule("connectors.canonical", "connectors"),
    Rule("connectors.query", "connectors", only=frozenset({"connectors.vocabulary", "connectors.canonical"})),
    Rule(
        "connectors.protocol",
        "connectors",
        only=frozenset({"connectors.vocabulary", "connectors.canonical", "connectors.query"}),
    ),
    # What a query needs of a department is planned from the wire's models alone (no configuration).
    Rule(
        "connectors.query_scope",
        "connectors",
        only=frozenset(
            {"connectors.vocabulary", "connectors.canonical", "connectors.query", "connectors.protocol"}
        ),
    ),
    # A department installs connectors/ alone.
    Rule("connectors", "gateway"),
    Rule("connectors", "aggregation"),
    Rule("connectors", "privacy"),
    Rule("audit", "gateway"),
    Rule("audit", "aggregation"),
    Rule("audit", "privacy"),
    Rule(
        "audit",
        "connectors",
        only=frozenset({"connectors.ids", "connectors.errors", "connectors.logs", "connectors.protocol"}),
    ),
    Rule("privacy", "gateway"),
    Rule("privacy", "aggregation"),
)


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(root: Path, dotted: str) -> bool:
    base = root.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imports(root: Path, path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in a file, relative ones resolved; `from a import b` is `a.b` when
    `b` is a module of ours."""
    this = _module_name(root, path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield node.lineno, candidate if _is_module(root, candidate) else base


def violations(root: Path, rules: tuple[Rule, ...] = RULES) -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")) if (root / package).is_dir() else []:
            importer = _module_name(root, path)
            for line, module in _imports(root, path):
                for rule in rules:
                    if _within(importer, rule.importer) and rule.breaks(module):
                        found.append(f"{rule.name}: {path.relative_to(root)}:{line} imports {module}")
    return found


def test_the_code_keeps_every_layering_rule() -> None:
    assert violations(ROOT) == []


def test_every_rule_is_named_in_the_architecture_page() -> None:
    layering = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").split("## Layering")[1]
    layering = layering.split("\n## ")[0]
    for rule in RULES:
        assert rule.importer + "/" in layering or rule.importer in layering, rule.name
        assert rule.imported.rpartition(".")[2] in layering, rule.name
        for allowed in rule.only or ():
            assert allowed.rpartition(".")[2].replace("_", " ") in layering.replace("_", " "), allowed


def _synthetic_tree(root: Path, files: dict[str, str]) -> Path:
    for package in PACKAGES:
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").write_text("")
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _breaking_import(rule: Rule) -> str:
    if rule.only is None:
        return rule.imported
    return f"{rule.imported}.not_on_the_list"


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_each_rule_fails_on_a_violation(tmp_path: Path, rule: Rule) -> None:
    target = _breaking_import(rule)
    parent, _, leaf = target.rpartition(".")
    # The offending file is the importer itself when the rule names a module, else one in its package.
    bad = rule.importer.replace(".", "/") + (".py" if "." in rule.importer else "/bad.py")
    files = {bad: f"def later() -> None:\n    import {target}\n"}
    if parent:
        files[f"{parent.replace('.', '/')}/{leaf}.py"] = ""
    root = _synthetic_tree(tmp_path, files)
    found = violations(root, (rule,))
    assert found == [f"{rule.name}: {bad}:2 imports {target}"]


def test_relative_and_from_imports_are_resolved(tmp_path: Path) -> None:
    root = _synthetic_tree(
        tmp_path,
        {
            "connectors/federation_keys.py": "",
            "connectors/protocol.py": "",
            "gateway/sub/__init__.py": "",
            "gateway/sub/relative.py": "from ...connectors import federation_keys\n",
            "gateway/from_package.py": "from connectors import federation_keys, protocol\n",
            "gateway/allowed.py": "from connectors.protocol import canonical_json\n",
        },
    )
    rule = next(r for r in RULES if r.imported == "connectors.federation_keys")
    assert violations(root, (rule,)) == [
        f"{rule.name}: gateway/from_package.py:1 imports connectors.federation_keys",
        f"{rule.name}: gateway/sub/relative.py:1 imports connectors.federation_keys",
    ]
