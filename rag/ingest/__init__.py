"""Files to clean paragraphs and chunks: loaders, cleaning, OCR, chunking."""
