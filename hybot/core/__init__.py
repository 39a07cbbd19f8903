"""hybot."""
