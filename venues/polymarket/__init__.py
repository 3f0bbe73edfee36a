"""Polymarket's CLOB V2 as a live broker (py-clob-client-v2): `credentials` reads the POLYMARKET_*
variables, `broker.LiveBroker` trades. Nothing is imported here, so reading credentials does not need
the optional client library."""
