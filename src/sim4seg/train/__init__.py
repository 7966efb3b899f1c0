"""Training: the loop on accelerate (DDP / DeepSpeed), resumable checkpoints, logs, recipes."""
