"""The node's HTTP API and its input parsing."""
