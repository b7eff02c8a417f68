"""Asterisk REST Interface: client, typed events, Stasis answering the dialplan."""
