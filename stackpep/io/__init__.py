"""The thin I/O edge: AF_PACKET ports, netfilter rules, rtnetlink lookups."""
