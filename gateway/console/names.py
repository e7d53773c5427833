"""Names beside codes: what the console shows next to a village code, an urban-rural class or a band.

The names are public: they come from the same published code lists as the codes (each connector
publishes them in its schema, `DimensionSchema.labels`), and for the dimensions derived from an ID
number (sex) or built by the gateway (household size band) from the message catalog.

    CodeNames.of(catalog)       every `connector.dataset.dimension` -> {code: name}
    names.label(ref, code, lang)   "里塘社区 (330922001001)" style text, or the bare code
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aggregation.query import SIZE_BAND
from connectors.protocol import ConnectorSchema
from gateway.i18n import Lang, MissingMessage, translate

__all__ = ["CodeNames"]


@dataclass(frozen=True)
class CodeNames:
    names: Mapping[str, Mapping[str, str]]
    derived: Mapping[str, str]
    """dimension reference -> the catalog key prefix of its names (`console.sex_1`, ...)"""

    @classmethod
    def of(cls, catalog: Mapping[str, ConnectorSchema]) -> CodeNames:
        names: dict[str, Mapping[str, str]] = {}
        derived: dict[str, str] = {SIZE_BAND: "console.size_band_"}
        for schema in catalog.values():
            for dataset in schema.datasets:
                for dim in dataset.dimensions:
                    ref = f"{schema.connector}.{dataset.name}.{dim.name}"
                    if dim.labels:
                        names[ref] = dim.labels
                    elif dim.derived_from_id and dim.name == "sex":
                        derived[ref] = "console.sex_"
        return cls(names=names, derived=derived)

    def name(self, ref: str, code: str | None, lang: Lang) -> str | None:
        if code is None:
            return None
        if ref in self.names:
            return self.names[ref].get(code)
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
        for names in self.names.values():
            if code in names:
                return f"{names[code]} ({code})"
        return code

    def label(self, ref: str, code: str | None, lang: Lang) -> str:
        """The code with its name, or the code alone (or the catalog's word for "other")."""
        if code is None:
            return translate("console.other_bucket", lang)
        name = self.name(ref, code, lang)
        return f"{name} ({code})" if name else code
