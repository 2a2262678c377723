"""Quantization: fewer bits per weight and activation, the arithmetic spelled out (math.py, view.py, int8.py)."""
