"""Using a trained checkpoint: :mod:`~engine.inference.evaluate` (metrics on the
validation split or new data) and :mod:`~engine.inference.predict` (batch prediction
through the task's predictor, the same path serving takes)."""
