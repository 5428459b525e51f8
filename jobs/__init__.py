"""Pure machine-learning code of tlbench: datasets, backbones, training; no web or queue code."""
