"""The local console and HTTP API."""
