"""The lessons: one folder per lesson (math.py + view.py), and plots.py, which every view shares."""
