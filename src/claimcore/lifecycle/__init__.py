"""The voucher's life after its grant (redemption, recycling, rounds) and the cross-campaign rules."""
