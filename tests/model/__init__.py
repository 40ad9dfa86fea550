"""A model checker for concurrent requests: random programs run through the real
middleware on every store, under a scheduler that picks the interleaving, and compared
with a plain-Python reference of the write-path contract (../notes/contract-v2.md).

- ``program``: what a program is (options, rounds of concurrent requests, their ops) and
  the hypothesis strategies that draw one;
- ``reference``: the model, what the contract says each step must do;
- ``scheduler``: gates at every await point a request can interleave at;
- ``harness``: runs a program through ``SessionMiddleware`` and feeds the model;
- ``audit``: store-specific integrity checks that read a store's internals.
"""
