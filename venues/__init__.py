"""Venue adapters: the live trading code of each venue, one package a venue (`venues/polymarket/`).

They sit above the engine (they implement its broker interface with `engine.broker.PositionRules`);
the engine never imports them: run.py hands one to `Engine(..., broker=)`.
"""
