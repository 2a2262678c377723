"""The normalization lesson: which values share one mean and variance, live statistics, batch size, folding."""
