"""The proxy: the HTTP API, the upload engine, placement, replication and downloads."""
