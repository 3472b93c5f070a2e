"""The daemon's HTTP side: callbacks from hosted agents (tool dispatch), health.

A small aiohttp app beside the gRPC server, on its own port (``http_listen``).
"""
