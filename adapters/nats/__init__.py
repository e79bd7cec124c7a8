"""NATS: the usage bus contract, streams, publisher, consumer and the views publisher."""
