"""Differential privacy for the gateway: OpenDP releases, their error bars and the federation budget.

- :mod:`privacy.vocabulary`: the release spec, statistic kinds, bin labels and result models (no OpenDP).
- :mod:`privacy.release`: a public release spec, built once into OpenDP measurements whose privacy map is
  checked before any data is seen, then applied to one row per privacy unit.
- :mod:`privacy.postprocess`: a release's raw noisy outputs turned into released cells with intervals.
- :mod:`privacy.intervals`: error bars from noisy values and public noise scales only (post-processing).
- :mod:`privacy.ledger`: the federation budget ledger (windows, multi-year cap, dataset caps, analyst quotas).
- :mod:`privacy.errors`: the package's error hierarchy.

This package never imports ``gateway``.
"""
