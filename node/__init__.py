"""A storage node: health, replicas received by its rsync daemon and confirmed after checking
their checksums, and ranged downloads by tokens the proxy signs.

``config`` (settings), ``cli`` (``pyarchive-node``), ``service`` (wiring, start/stop),
``app`` (routes), ``inputs`` (request bodies), ``replicas`` (the disk), ``rsyncd`` (the rsync
daemon's configuration and supervision).
"""
