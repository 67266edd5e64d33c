"""科协问答 web chat: `python app.py` (or `make run`). Indexes corpus/ first if there is no index."""

from __future__ import annotations

import logging
import sys


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from rag.index import store
    from rag.settings import configure_logging, find_config, load_settings

    settings = load_settings(find_config())
    configure_logging(settings)
    if store.Manifest.read(settings.index_dir) is None:
        from rag.index.indexer import index_corpus, tty_progress

        print(f"首次启动：正在索引 {settings.corpus_dir} …", flush=True)
        rep = index_corpus(settings, progress=tty_progress())
        print(f"索引完成：{rep.chunks} 个段落，用时 {rep.seconds:.1f} 秒", flush=True)
    import atexit

    from rag.answer.assistant import Assistant
    from rag.serve.web import build_app, launch, server_address

    assistant = Assistant(settings)
    atexit.register(assistant.close)  # Chroma handles, alias links, the local model's worker
    demo = build_app(settings, assistant)
    host, port = server_address(settings)
    print(f"科协问答已启动：http://{host}:{port}", flush=True)
    launch(settings, demo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
