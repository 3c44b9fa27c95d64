"""Storage nodes (next issue): health, rsync-received replicas, signed ranged downloads."""
