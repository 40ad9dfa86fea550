"""The middleware over HTTP: configuration, cookies, scopes, 503s, importers, load."""
