"""Routers of the console: one module per page and its API."""
