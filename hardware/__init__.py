"""Everything that touches a physical device, each behind a small interface with a fake beside it."""
