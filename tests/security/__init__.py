"""Hostile clients and keys: forged and shadowed cookies, fuzzing, fixation, old secrets."""
