"""Ready-made pipelines for the brief's projects (the card-fraud detector first)."""
