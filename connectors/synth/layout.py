"""How the synthetic county's departments name things: connectors, datasets, measures, dimensions, tables
and columns.

`STANDARD` is the federation's own naming (`tax.wages.wage_income`, ...). `RENAMED` is the same county as
another county's departments might have set it up (`tax.payroll.gross_pay`, `hrss.pension_paid`,
`civil.minimum_living`, other table and column names): the data are identical, so the truth file holds,
but nothing that names the standard catalog can read it. A federation over it runs the indicators only
through a monitoring configuration written for its catalog.

Everything else in the generator speaks the standard names; a layout is applied where names leave it: the
connector configurations, the stores, the keys and the monitoring configuration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from connectors.synth.departments import Table

__all__ = ["LAYOUTS", "RENAMED", "STANDARD", "Layout", "layout_named"]


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Layout:
    """Renames, each from the standard name; what is not listed keeps its standard name."""

    name: str
    connectors: Mapping[str, str] = field(default_factory=dict)
    """connector (and its department) -> its name"""
    datasets: Mapping[str, str] = field(default_factory=dict)
    """`connector.dataset` -> the dataset's name"""
    fields: Mapping[str, str] = field(default_factory=dict)
    """`connector.dataset.measure` or `connector.dataset.dimension` -> its name"""
    tables: Mapping[str, str] = field(default_factory=dict)
    """`department.table` (or file stem) -> its name"""
    columns: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """`department.table` -> {column: its name}"""

    def connector(self, name: str) -> str:
        return self.connectors.get(name, name)

    def dataset(self, ref: str) -> str:
        """A standard `connector.dataset` in this layout."""
        connector, _, name = ref.partition(".")
        return f"{self.connector(connector)}.{self.datasets.get(ref, name)}"

    def field_ref(self, ref: str) -> str:
        """A standard `connector.dataset.measure|dimension` in this layout."""
        dataset, _, name = ref.rpartition(".")
        return f"{self.dataset(dataset)}.{self.fields.get(ref, name)}"

    def table(self, department: str, table: Table) -> Table:
        """One store table under this layout's table and column names."""
        key = f"{department}.{table.name}"
        columns = dict(self.columns.get(key, {}))
        return dataclasses.replace(
            table,
            name=self.tables.get(key, table.name),
            frame=table.frame.rename(columns=columns),
            id_column=columns.get(table.id_column, table.id_column),
            month_column=None
            if table.month_column is None
            else columns.get(table.month_column, table.month_column),
        )

    def connector_doc(self, standard: str, doc: dict[str, Any]) -> dict[str, Any]:
        """A connector configuration written with standard names, renamed (keys stay where they are)."""
        name = self.connector(standard)
        out = {**doc, "name": name, "department": name}
        out["signing_key_file"] = f"../keys/{name}-connector.key"
        out["state_dir"] = f"../state/{name}"
        out["datasets"] = [self._dataset_doc(standard, d) for d in doc["datasets"]]
        return out

    def _dataset_doc(self, connector: str, doc: dict[str, Any]) -> dict[str, Any]:
        ref = f"{connector}.{doc['name']}"
        out = {**doc, "name": self.datasets.get(ref, doc["name"])}
        source = doc.get("table") or str(doc.get("file", "")).rpartition(".")[0]
        key = f"{connector}.{source}"
        columns = self.columns.get(key, {})

        def column(name: str) -> str:
            return columns.get(name, name)

        if "table" in doc:
            out["table"] = self.tables.get(key, doc["table"])
        elif "file" in doc:
            suffix = str(doc["file"]).rpartition(".")[2]
            out["file"] = f"{self.tables.get(key, source)}.{suffix}"
        for part in ("entity", "period", "household"):
            if part in doc:
                out[part] = {**doc[part], "column": column(doc[part]["column"])}
        for part in ("measures", "dimensions"):
            if part not in doc:
                continue
            renamed = []
            for item in doc[part]:
                new = {**item, "name": self.fields.get(f"{ref}.{item['name']}", item["name"])}
                if "column" in item:
                    new["column"] = column(item["column"])
                renamed.append(new)
            out[part] = renamed
        return out


STANDARD = Layout("standard")

RENAMED = Layout(
    "renamed",
    connectors=_frozen({"social": "hrss", "register": "hukou"}),
    datasets=_frozen(
        {
            "register.persons": "residents",
            "tax.wages": "payroll",
            "tax.business_income": "self_employed",
            "social.contributions": "contribution_paid",
            "social.pensions": "pension_paid",
            "social.occupations": "insured_jobs",
            "civil.assistance": "minimum_living",
        }
    ),
    fields=_frozen(
        {
            "register.persons.village": "community",
            "register.persons.urban_rural": "area_type",
            "register.persons.region_code": "id_region",
            "tax.wages.wage_income": "gross_pay",
            "tax.business_income.business_income": "net_profit",
            "social.contributions.personal_contribution": "employee_share",
            "social.pensions.pension_income": "pension_amount",
            "social.occupations.occupation_medium": "job_class",
            "civil.assistance.assistance_income": "benefit_yuan",
        }
    ),
    tables=_frozen(
        {
            "register.persons": "hukou_members",
            "tax.wages": "payroll_lines",
            "social.pensions": "pension_payments",
            "civil.assistance": "dibao_payments",
        }
    ),
    columns=_frozen(
        {
            "register.persons": {"village_code": "cun_code", "household_no": "hu_no", "id_number": "sfzh"},
            "tax.wages": {"amount": "gross_yuan", "taxpayer_id": "payee_id", "month": "pay_month"},
            "social.pensions": {"amount": "paid_yuan", "person_id": "insured_id"},
            "civil.assistance": {"amount": "paid_yuan", "id_number": "recipient_id"},
        }
    ),
)

LAYOUTS: Mapping[str, Layout] = MappingProxyType({layout.name: layout for layout in (STANDARD, RENAMED)})


def layout_named(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown layout {name!r}; expected one of {', '.join(LAYOUTS)}") from None
