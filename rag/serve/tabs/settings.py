"""设置: top-k, retrieval mode, answer backend and the OpenAI-compatible endpoint, for this browser session."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from rag.models import Backend, RetrievalMode
from rag.serve.chat import EndpointRefused, endpoint_settings
from rag.settings import Settings

BACKENDS = {"离线抽取（默认）": Backend.EXTRACTIVE.value, "OpenAI 兼容接口": Backend.OPENAI.value, "本地 GGUF 模型": Backend.LLAMACPP.value}
MODES = {"混合检索": RetrievalMode.HYBRID.value, "仅 BM25": RetrievalMode.BM25.value, "仅向量": RetrievalMode.VECTOR.value}


class Choices:
    """The applied choices (a session's state, read by every answer) and the line over the chat that names them."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.default_backend = next((k for k, v in BACKENDS.items() if v == settings.answer_backend), "离线抽取（默认）")
        self.default_mode = next((k for k, v in MODES.items() if v == settings.retrieval_mode), "混合检索")
        self.opts = gr.State({"k": settings.top_k, "mode": settings.retrieval_mode, "backend": settings.answer_backend,
                              "base_url": settings.llm_base_url, "model": settings.llm_model, "api_key": ""})

    def status_line(self) -> None:
        self.status = gr.Markdown(f"当前回答后端：**{self.default_backend}** · 检索：{self.default_mode} · top-k {self.settings.top_k}",
                                  elem_id="backend-status")

    def tab(self) -> None:
        settings = self.settings
        with gr.Tab("设置", id="settings"):
            k = gr.Slider(1, 20, value=settings.top_k, step=1, label="检索条数 top-k")
            mode = gr.Radio(list(MODES), value=self.default_mode, label="检索模式")
            backend = gr.Dropdown(list(BACKENDS), value=self.default_backend, label="回答后端")
            # The GGUF path is configuration only: a web form must not make the server open arbitrary files.
            gguf = Path(settings.gguf_path).name if settings.gguf_path else "未配置（在 kexie.toml 或环境变量 KEXIE_GGUF_PATH 中设置 gguf_path）"
            gr.Markdown(f"本地 GGUF 模型：{gguf}", elem_id="gguf-info")
            base_url = gr.Textbox(value=settings.llm_base_url, label="OpenAI 兼容接口地址（base URL）")
            model = gr.Textbox(value=settings.llm_model, label="模型名称")
            api_key = gr.Textbox(value="", type="password", label="API Key（留空时：配置中的地址使用配置的 Key，其他地址不发送 Key）")
            apply = gr.Button("应用设置", elem_id="apply-settings")
        apply.click(self.save_opts, [self.opts, k, mode, backend, base_url, model, api_key], [self.opts, self.status])

    def save_opts(self, old, k, mode, backend, base_url, model, api_key):
        try:
            endpoint_settings(self.settings, base_url, model, api_key)
        except EndpointRefused as e:  # the same notice whatever the address: nothing is contacted
            return old, f"设置未应用：{e}"
        opts = {"k": int(k), "mode": MODES[mode], "backend": BACKENDS[backend], "base_url": base_url, "model": model, "api_key": api_key}
        return opts, f"当前回答后端：**{backend}** · 检索：{mode} · top-k {int(k)}"
