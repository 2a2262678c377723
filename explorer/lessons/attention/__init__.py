"""The attention lesson: patches, attention maps per layer and head, one head step by step, rollout, distance."""
