"""Loopback fakes of remote services for tests."""
