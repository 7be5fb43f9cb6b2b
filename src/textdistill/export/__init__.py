"""textdistill.export."""
