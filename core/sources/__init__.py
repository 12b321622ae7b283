"""Sources: what a model and its data are and where they come from (the model and dataset
registries, weight files, the cached bases, a person's entries and readers, Hugging Face folders)."""
