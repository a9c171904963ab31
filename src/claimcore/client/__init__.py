"""The client for app backends, imported as `claimcore.client`: ClaimClient (claims.py; asyncio,
claim() calls batched by batching.py) and SyncClaimClient (sync.py; the same for threads)."""

from claimcore.client.batching import BatchStats
from claimcore.client.claims import ClaimClient, ClaimOutcomeUnknown
from claimcore.client.sync import SyncClaimClient

__all__ = ["BatchStats", "ClaimClient", "ClaimOutcomeUnknown", "SyncClaimClient"]
