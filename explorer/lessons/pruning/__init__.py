"""Pruning: magnitude, random and structured pruning of a private copy, with measured accuracy and speed."""
