"""textdistill.losses."""
