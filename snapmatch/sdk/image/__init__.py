"""Images: decoding with byte limits (image_header) and the one preprocessing function (preprocess)."""
