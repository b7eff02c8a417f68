"""Asterisk Manager Interface: connection, wire protocol, frames, frame -> event."""
