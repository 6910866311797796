"""Dynamic batching: the pure policy, bucket padding, and the asyncio batcher."""
