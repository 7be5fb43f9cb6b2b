"""textdistill.pipeline."""
