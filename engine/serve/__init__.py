"""``lepton serve``: trained models behind HTTP (KServe V1 and the Open Inference Protocol)."""
