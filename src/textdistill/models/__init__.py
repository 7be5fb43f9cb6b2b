"""Teacher loading, student builders and the ModelOutputs contract."""
