"""What the web app left on the Redis broker: the job ids of the training messages waiting in a queue."""
from __future__ import annotations

import base64
import json


def queued_job_ids(redis_client, queue: str) -> list[int]:
    """The job ids of the training messages waiting in one queue (a pool's)."""
    messages = [json.loads(raw) for raw in redis_client.lrange(queue, 0, -1)]
    return sorted(json.loads(base64.b64decode(m["body"]))[0][0] for m in messages)
