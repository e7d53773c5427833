"""Names beside codes as the console shows them: "里塘社区 (330922001001)" style labels.

The names of published code lists come from `gateway.codenames` (their one home); this adds what only
the console shows: the names of the dimensions derived from an ID number (sex) or built by the gateway
(household size band), from the message catalog, and the label text.

    ConsoleLabels.of(catalog)        from the gateway's catalog of connector schemas
    labels.label(ref, code, lang)    the code with its name, or the bare code
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aggregation.query import SIZE_BAND
from connectors.protocol import ConnectorSchema
from gateway.codenames import CodeNames
from gateway.i18n import Lang, MissingMessage, translate

__all__ = ["ConsoleLabels"]


@dataclass(frozen=True)
class ConsoleLabels:
    codes: CodeNames
    derived: Mapping[str, str]
    """dimension reference -> the catalog key prefix of its names (`console.sex_1`, ...)"""

    @classmethod
    def of(cls, catalog: Mapping[str, ConnectorSchema]) -> ConsoleLabels:
        derived: dict[str, str] = {SIZE_BAND: "console.size_band_"}
        for schema in catalog.values():
            for dataset in schema.datasets:
                for dim in dataset.dimensions:
                    if not dim.names and dim.derived_from_id and dim.name == "sex":
                        derived[f"{schema.connector}.{dataset.name}.{dim.name}"] = "console.sex_"
        return cls(codes=CodeNames.from_catalog(catalog.values()), derived=derived)

    def name(self, ref: str, code: str | None, lang: Lang) -> str | None:
        if code is None:
            return None
        if ref in self.codes.by_dimension:
            return self.codes.name(ref, code)
        prefix = self.derived.get(ref)
        if prefix is not None:
            try:
                return translate(prefix + code.replace("+", "plus"), lang)
            except MissingMessage:
                return None
        return None

    def any_label(self, code: str) -> str:
        """A code with the name some code list gives it (indicator groups carry codes, not their
        dimension), or the code alone."""
        name = self.codes.any_name(code)
        return f"{name} ({code})" if name else code

    def label(self, ref: str, code: str | None, lang: Lang) -> str:
        """The code with its name, or the code alone (or the catalog's word for "other")."""
        if code is None:
            return translate("console.other_bucket", lang)
        name = self.name(ref, code, lang)
        return f"{name} ({code})" if name else code
