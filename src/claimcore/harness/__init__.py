"""Run the real thing on loopback: a private redis-server or cluster, child nodes, the history checker."""
