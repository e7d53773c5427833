"""The gateway HTTP API: thin routes over the registry, queries, runner and ledger."""
