"""The Telegram side of captionbot: handlers, the micro-batching queue, live figures.

It uses ``captioner`` to caption photos and python-telegram-bot to talk to Telegram; start it
with ``captionbot serve`` (see ``bot.app``).
"""
