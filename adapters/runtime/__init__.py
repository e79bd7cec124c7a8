"""Settings, the composition root, embedded servers and the processes `ledger up` runs."""
