"""`python -m adapters.cli.main`: the same as the `ledger` command."""

from adapters.cli.main.main import main

raise SystemExit(main())
