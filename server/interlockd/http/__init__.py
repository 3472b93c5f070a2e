"""The daemon's HTTP side: callbacks from hosted agents (tool dispatch), MCP, health.

A small Starlette app beside the gRPC server, served by an in-process uvicorn
on its own port (``http_listen``).
"""
