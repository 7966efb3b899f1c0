"""Inference: the predictor (encode once, query many), test-time scaling, batch prediction, sweeps."""
