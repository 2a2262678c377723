"""The convolution lesson: the sliding window, playground, receptive field and filter atlas."""
