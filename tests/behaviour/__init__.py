"""The shared behaviour suite: what every store does, run once per store by the ``store``
and ``any_store`` fixtures (``store_suite.py`` runs it on a store written elsewhere)."""
