"""科协问答 (kexie-rag): hybrid BM25 + vector retrieval and grounded answers over Chinese documents."""
