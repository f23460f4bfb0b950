"""Work queues, rate limiters and the clock they run on (client-go semantics, asyncio)."""
