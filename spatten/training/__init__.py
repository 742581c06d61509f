"""Training procedures: task heads, small language models, and fine-tuning with pruning in the loop."""
