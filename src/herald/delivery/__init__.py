"""Delivery: SMTP transport, relay pool, the embedded capture relay and the worker loop."""

from __future__ import annotations
