"""The audio bridge: a long-lived asyncio WebSocket service between Sautikit and a realtime model."""
