"""The SQLite outbox: every result is committed here first, then delivered by its consumers."""
