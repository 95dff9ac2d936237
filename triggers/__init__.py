"""Trigger adapters: each turns a source's native messages into Events and settles them."""
