"""Fakes of physical devices, for tests, demos and the bench."""
