"""textdistill.evaluation."""
