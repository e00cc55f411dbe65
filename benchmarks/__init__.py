"""Scripts that start MonCréneau for real and print figures with ratios to baselines."""
