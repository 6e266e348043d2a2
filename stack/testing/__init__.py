"""Testing kit: packetdrill-style scripts, hypothesis strategies, a TCP state machine."""
