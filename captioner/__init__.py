"""Image in, caption out: images, encoders, vocabulary, decoder, decoding, checkpoints."""
