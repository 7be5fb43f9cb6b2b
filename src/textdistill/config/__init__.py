"""textdistill.config."""
