"""The store: everything Redis holds and every script that changes it (keys, Lua, calls, the inventory)."""
