"""Files: atomic pickle-free checkpoints, training runs on disk, datasets."""
