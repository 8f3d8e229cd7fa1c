"""Audio as a third mmgen modality, as a plugin package (imports only mmgen.api)."""
