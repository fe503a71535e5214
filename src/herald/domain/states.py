"""The states Herald stores. Enum values are the strings in the database."""

from __future__ import annotations

from enum import StrEnum


class SubscriberStatus(StrEnum):
    ENABLED = "enabled"
    BLOCKLISTED = "blocklisted"


class OptIn(StrEnum):
    SINGLE = "single"
    DOUBLE = "double"


class SubscriptionStatus(StrEnum):
    UNCONFIRMED = "unconfirmed"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    CANCELLED = "cancelled"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    BOUNCED = "bounced"


class SuppressionReason(StrEnum):
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBED = "unsubscribed"
    MANUAL = "manual"
