"""Which worker's queue a TCP or UDP flow belongs to: a hash of its two ports.

One fact shared by two layers: the steering program (stack/netdev/steer.py) sends a
frame to the queue this hash names, and TCP (stack/tcp/layer.py, TcpConfig.port_shard)
picks a local port for a worker's outgoing connection so that the hash lands on that
worker's own queue. The sum of the ports makes it the same in both directions.
"""

from __future__ import annotations

#: Knuth's multiplicative constant (2**32 / golden ratio): spreads the port sum.
GOLDEN = 0x9E3779B1


def queue_of(sport: int, dport: int, queues: int) -> int:
    """The queue the steering program picks for a TCP or UDP frame between these ports."""
    return ((((sport + dport) * GOLDEN) & 0xFFFFFFFF) >> 16) % queues
