"""The HTTP side: health, metrics, the API and CRM webhooks (aiohttp)."""
