"""The saliency lesson: what the model looks at (five attribution methods), and whether to believe it (deletion and
insertion curves, the model-randomisation sanity check)."""
