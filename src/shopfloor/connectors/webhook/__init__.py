"""Outbound webhooks over HTTP (httpx): ``HttpxWebhookSender`` implements ``ports.notify.WebhookSender``."""
