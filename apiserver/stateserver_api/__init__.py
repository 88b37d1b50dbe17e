"""The stateserver.ha API server: one per state machine, all of them talking to the replica set's primary."""
