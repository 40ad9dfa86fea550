"""Scripts that keep the project honest (run by ``make lint``), importable by the tests."""
