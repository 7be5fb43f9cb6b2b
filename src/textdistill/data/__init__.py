"""textdistill.data."""
