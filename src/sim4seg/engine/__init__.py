"""Engine: training, prediction and test-time scaling (``tts``)."""
