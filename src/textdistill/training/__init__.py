"""textdistill.training."""
