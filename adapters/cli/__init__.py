"""The `ledger` command line, one module per group of subcommands."""
