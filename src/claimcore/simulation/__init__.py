"""A seeded simulation of everything at once: the tool that finds the next interleaving defect.

One run per seed: real redis-server processes (a plain Redis or a Redis Cluster), several real
front nodes (LocalNode child processes) with clocks that disagree and sweepers of their own, and
one driver that mixes every public operation through gRPC while it kills nodes, drops Redis
connections and reshards. Every call and its answer is recorded; once the run has quiesced the
checker reads every campaign back from Redis and holds it against the recorded answers.

    python -m claimcore.simulation --seeds 1-5 --minutes 2 [--cluster] [--json summary.json]

world.py starts and breaks the processes, campaigns.py makes the campaigns of a seed,
schedule.py draws the operations from the seed, operations.py runs them and calls.py records
them, state.py reads Redis back, checks.py judges, report.py prints, runner.py ties one seed
together. docs/reliability.md, "The simulation", has what it mixes, what it checks and its figures.
"""
