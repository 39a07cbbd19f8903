"""Fakes of hybot's remotes and seams, shared by the tests."""
