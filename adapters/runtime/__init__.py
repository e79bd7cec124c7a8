"""Settings, the composition root, the embedded servers, the processes `ledger up` runs, and
`ledger demo` with the "team with priced accounts" builder that tests and benchmarks share."""
