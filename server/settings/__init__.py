"""What to serve and how: the options, the settings file, the models to load, the Ray layout (the lowest layer)."""
