"""Synthetic island county: population, department records with realistic defects, stores, configs, truth.

    from connectors.synth import generate_county
    summary = generate_county(Path(".demo/county"), persons=200_000, seed=7)

Everything it writes is synthetic demo data, and its keys are demo keys.
"""

from connectors.synth.county import CountySummary, generate_county

__all__ = ["CountySummary", "generate_county"]
