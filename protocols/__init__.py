"""Sans-I/O wire protocols: bytes in, events out; replies in, bytes out.

No sockets, no asyncio, no storage in this package (model: h11, wsproto).
"""
