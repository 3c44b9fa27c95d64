"""Accounts, files and versions, and their SQL."""
