"""The web layer: an ASGI feedback endpoint a user mounts in their own app."""
