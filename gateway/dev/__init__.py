"""The loopback federation and demo harness: synthetic counties, local processes, `fedgate demo`."""
