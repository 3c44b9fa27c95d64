"""The S3 tier: connections, mirror assignment, restores, metadata backup and recovery."""
