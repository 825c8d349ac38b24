"""Where and how computation runs: device and precision choices, process groups (below training and inference)."""
