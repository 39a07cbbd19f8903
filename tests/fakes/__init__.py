"""Loopback fakes of remote services, for tests and benchmarks."""
