"""What every package may import: it imports neither torch nor Ray."""
