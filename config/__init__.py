"""How this deployment of tlbench is set up (config/settings.py): read once from the environment, then
passed down. It imports nothing of tlbench's but jobs/cache.py, so every layer may read it."""
