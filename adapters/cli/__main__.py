"""`python -m adapters.cli.main`: the same as the `ledger` command."""

from adapters.cli.main import main

raise SystemExit(main())
