"""The base of every error that a user can cause and should see as one plain message.

The command line and the bot catch ``CaptionbotError`` and show its text; anything else is a
bug and keeps its traceback.
"""


class CaptionbotError(Exception):
    """An expected failure whose message is fit to show a user as it is."""
