"""The tabs of the web page, one module each; rag/serve/web.py lays them out."""
