"""One module per daemon: binds a protocol state machine to asyncio streams and the services."""
