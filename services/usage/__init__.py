"""Usage recording: every usage record priced and charged exactly once, in batches.

- `recording.py`: `UsageRecording`, one batch or a pipelined stream of batches; commit and retry.
- `preparing.py`: `BatchPreparer`, the steps before the commit (known ids, duplicates and
  conflicts, pricing, rejections counted once, the extras saved with the events).
- `account_cache.py`: the bounded cache of accounts that batches are priced on.
- `outcomes.py`: what a batch did, record by record, and the counters kept with the events.
- `mapper.py`: `LedgerMapper`, the encoding half of the usage fast path (the decoding half is
  `projections/decoding.py`; tests/services/test_usage_fast_path.py round-trips both).

The package is given narrow ports (`recording.UsagePorts`), never the `Ledger`: no import cycle.
"""
