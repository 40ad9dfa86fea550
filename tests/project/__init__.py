"""The project as a whole: the docs run, the public API, the CLI, a first run."""
