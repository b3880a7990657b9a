"""The dialer engine. Pure parts (no I/O, time passed in): `events` and `commands` (its vocabulary
with the PBX), `calls` (the call state table), `pacing`, `routing`, `preview` and the coordinator
`dialer`. Around them: `store` (its SQL, behind the `Store` protocol), `runner` (the async process
shell: gateways, bus, database) and `simulation` (the same core in discrete-event time)."""
