"""M3DS data: schema and manifests, image I/O, source converters, synthetic data."""
