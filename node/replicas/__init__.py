"""Replicas on the node's disk and the supervised rsync daemon that receives them."""
