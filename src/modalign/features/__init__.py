"""Data + store -> features: encode columns through the store, pick rows for a split."""
