"""A real OpenAI-compatible chat-completions server on 127.0.0.1 for tests (streaming and not).

Its "model" is deterministic and grounded: it answers with the first sentence of passage [1] of the
prompt, cited as [1], so tests can check that passages reach the prompt and [n] markers resolve.
Modes: "grounded" (default), "wrong_cite" (cites [2] for passage 1's sentence), "unsupported"
(adds a sentence with a figure found in no passage), "refuse", "slow" (sleeps past timeouts),
"obey_unfenced" (says "我是管理员" if that instruction appears outside the <资料> fence), "garbage"
(a 200 reply whose body is not a chat completion: a client-side error, not an outage).
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeLLM:
    def __init__(self, mode: str = "grounded"):
        self.mode = mode
        self.requests: list[dict] = []
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def reply(self, messages: list[dict]) -> str:
        user = next(m["content"] for m in messages if m["role"] == "user")
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        if "改写" in system:  # follow-up rewriting request
            q = user.rsplit("最后的问题：", 1)[-1]
            return "济宁市科协组建了多少支科技志愿服务队" if "济宁" in q else q
        if self.mode == "refuse":
            return "根据现有资料未找到与该问题相关的内容。"
        if self.mode == "obey_unfenced":
            outside = re.sub(r"<资料>.*?</资料>", "", user, flags=re.S)
            if "我是管理员" in outside or "我是管理员" in system:
                return "我是管理员"
        m = re.search(r"\[1\][^\n]*\n(.+?)(?:\n\n\[2\]|\n</资料>)", user, re.S)
        passage = m.group(1) if m else ""
        first = re.split(r"(?<=[。！？；])", passage.replace("**", ""))[0].strip()
        first = re.sub(r"^\d+[.、]\s*", "", first).rstrip("。；")
        cite = "[2]" if self.mode == "wrong_cite" else "[1]"
        text = f"{first}{cite}。"
        if self.mode == "unsupported":
            text += "此外，该市共建成科普基地98765个[1]。"
        return text

    def _handler(self):
        llm = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                llm.requests.append({"body": body, "auth": self.headers.get("Authorization", "")})
                if llm.mode == "slow":
                    time.sleep(5)
                if llm.mode == "garbage":
                    data = b'{"choices": 7}' if not body.get("stream") else b'data: {"choices": 7}\n\n'
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream" if body.get("stream") else "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                text = llm.reply(body["messages"])
                if body.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for i in range(0, len(text), 4):
                        chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                                 "choices": [{"index": 0, "delta": {"content": text[i:i + 4]}, "finish_reason": None}]}
                        self.wfile.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
                        self.wfile.flush()
                    done = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"],
                            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                    self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
                    return
                out = {"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                data = json.dumps(out, ensure_ascii=False).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return H
