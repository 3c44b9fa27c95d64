"""Mirroring replicas to S3 and restoring them: the loop, its state, the wire format."""
