"""Security: who is calling, what they may touch, how fast, and how clients prove who they are."""
