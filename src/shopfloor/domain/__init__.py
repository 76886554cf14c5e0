"""Pure model and logic. Imports nothing of ours; stdlib and msgspec only."""
