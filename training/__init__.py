"""Training side of captionbot: Flickr8k loading, feature caching, fitting and evaluation.

Everything here builds on ``captioner`` (images, encoders, vocabulary, decoder, checkpoint);
nothing in ``captioner`` or ``bot`` imports this package.
"""
