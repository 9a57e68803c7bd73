"""Videos -> frames -> features -> tracks -> cached sequences, and the datasets and splits they come from."""
