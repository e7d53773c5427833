"""Differential privacy for the gateway: OpenDP releases, their error bars and the federation budget.

- :mod:`privacy.release`: a public release spec, built once into OpenDP measurements whose privacy map is
  checked before any data is seen, then applied to one row per privacy unit.
- :mod:`privacy.intervals`: error bars from noisy values and public noise scales only (post-processing).
- :mod:`privacy.ledger`: the federation budget ledger, per data year for its lifetime (the federation's cap,
  dataset caps, analyst quotas).
- :mod:`privacy.errors`: the package's error hierarchy.

This package never imports ``gateway``.
"""
