"""Fakes for tests: scripted stand-ins of remote services and of hybot's own protocols."""
