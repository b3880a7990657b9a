"""PBX drivers behind one contract (`callcenter.gateways.base`); they speak the engine's vocabulary
(`callcenter.engine.events`, `callcenter.engine.commands`)."""
