"""The names of public codes (villages, urban–rural classes, townships ...), for showing beside the codes.

A connector reads its dimensions' code lists with their names (`connectors.config.read_codelist_names`)
and publishes both in its catalog schema (`DimensionSchema.names`). This module is the one place that
turns a catalog into lookups; tables, frames, workbooks, plots and the console all ask it:

    names = CodeNames.from_catalog(gw.catalog())     # the `/v1/catalog` document, or ConnectorSchemas
    names.name("civil.register.village", "330921001001")   # '里塘社区'
    names.any_name("330921001001")                          # the same, whatever the dimension

A code with no name (a code list without a name column, a pooled "other" cell) has name None; a caller
shows the code alone then. Names are public policy like the codes; nothing here is counted from data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors.protocol import ConnectorSchema
from gateway.i18n import translate

__all__ = ["REFERENCE_POOLS", "CodeNames"]

REFERENCE_POOLS = ("county", "urban", "rural")
"""The pools an indicator reports beside its villages; named through the catalog (`columns.pool_*`)."""


@dataclass(frozen=True)
class CodeNames:
    """Code -> name per dimension reference (`connector.dataset.dimension`)."""

    by_dimension: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @classmethod
    def from_catalog(cls, catalog: Mapping[str, Any] | Iterable[ConnectorSchema]) -> CodeNames:
        """From the `/v1/catalog` JSON document or from connector schemas."""
        schemas: Iterable[ConnectorSchema]
        if isinstance(catalog, Mapping):
            schemas = [ConnectorSchema.model_validate(c) for c in catalog.get("connectors", [])]
        else:
            schemas = catalog
        found: dict[str, Mapping[str, str]] = {}
        for schema in schemas:
            for ds in schema.datasets:
                for dim in ds.dimensions:
                    if dim.names:
                        found[f"{schema.connector}.{ds.name}.{dim.name}"] = dict(dim.names)
        return cls(found)

    def name(self, dimension: str, code: str | None) -> str | None:
        """The code's name in that dimension's code list, or None."""
        if code is None:
            return None
        return self.by_dimension.get(dimension, {}).get(code)

    def any_name(self, code: str | None) -> str | None:
        """The code's name in whichever code list has it (figures name their group by code alone)."""
        if code is None:
            return None
        for names in self.by_dimension.values():
            if code in names:
                return names[code]
        return None

    def group_name(self, group: str, lang: str, dimension: str | None = None) -> str | None:
        """An indicator figure's group: county/urban/rural in `lang`, a village by its code list."""
        if group in REFERENCE_POOLS:
            return translate(f"columns.pool_{group}", lang)
        return self.name(dimension, group) if dimension else self.any_name(group)
