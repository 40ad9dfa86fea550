"""What only one store does: its tables or keys, topologies, URLs, faults and processes."""
