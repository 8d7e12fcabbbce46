"""Plots and reports (matplotlib is imported lazily: `import modalign` does not need it)."""
