"""Storage nodes: administration, the signed client, placement, replication, downloads."""
