"""The operator's tools: the `claimcore` command line and the wall display."""
