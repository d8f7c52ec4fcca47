"""Pre-training model, optimisers and schedules."""
