"""Package data: the Lua scripts (loaded by claimcore.store.scripts)."""
