"""PostgreSQL: the event store recorder, the read-model store and log reader, and the SQL of
the auditor's tools."""
