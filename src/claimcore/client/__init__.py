"""The client for app backends (claims.py: ClaimClient), imported as `claimcore.client`."""

from claimcore.client.claims import ClaimClient, ClaimOutcomeUnknown

__all__ = ["ClaimClient", "ClaimOutcomeUnknown"]
