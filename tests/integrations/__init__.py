"""Real flows of the libraries people use with sessions, through our middleware."""
