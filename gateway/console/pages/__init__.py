"""The console's pages, one module per family (each a `router` with its menu entries)."""
