"""Where decisions go: the events file and stdout (background writers) and the HTTP sink."""
