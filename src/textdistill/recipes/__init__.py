"""textdistill.recipes."""
