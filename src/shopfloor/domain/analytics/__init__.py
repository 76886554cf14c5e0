"""Analytics on machine data: anomaly detectors and remaining-useful-life models (pure, no I/O)."""
