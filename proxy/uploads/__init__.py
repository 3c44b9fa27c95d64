"""The upload engine: where bodies go, staging on disk, running hashes, claims."""
