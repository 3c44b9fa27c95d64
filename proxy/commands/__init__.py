"""The command groups of ``pyarchive-proxy`` (``nodes``, ``s3``, ``restore``, ``snapshots``);
``proxy.cli`` holds the top-level group and puts them under it."""
