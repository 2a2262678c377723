"""The compute core: plain PyTorch and NumPy, no UI imports (see ARCHITECTURE.md)."""
