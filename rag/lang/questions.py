"""Words that say how a question is asked, not what it is about. Two lists on purpose: the tokenizer's
stopwords (whole jieba tokens, dropped from BM25 queries and passages alike) and the fillers cut out of a
question's text before two questions are compared."""

from __future__ import annotations

import re

from rag.lang.text import HAN

# Function words and question words carry no topical signal; punctuation is dropped separately.
STOPWORDS = frozenset(
    """的 了 是 在 和 与 及 以及 或 等 也 都 而 并 并且 就 还 又 对 为 以 于 把 被 将 从 向 由 之 其 这 那 这个 那个
    这些 那些 个 上 下 中 有 没有 我 你 他 她 它 我们 你们 他们 吗 呢 吧 啊 呀 哦 么 嘛 请问 请 一下 告诉 介绍 说说
    什么 哪些 哪个 哪里 哪 怎么 怎样 如何 为什么 多少 几 几个 是否 是不是 有没有 能否 可以 一些 一个 具体 主要
    关于 相关 进行 通过 根据 按照 已经 所 得 地 着 过 啥 咋 谁 何 几时 多久 多大 多长 多高 多远 什么样 怎么样 为啥
    里 里面 说 说的 讲 讲些 叫 叫做 做 给 帮 让 想 要 需要 能 会 该 还 还有 来着 那次 那位 这次 最近 目前 现在
    一共 总共 共 各 各有 各是 分别 情况 方面 内容 意思 东西 地方 时候 大概 大约 到底 究竟 呀 哈 嗯 吧 们 自己
    认为 觉得 知道 问 问题 一般 主要是 都是 是从 开始""".split()
)
# "几支" "几位" "哪一年" "多少钱": interrogative + measure word, no topical signal either.
INTERROGATIVE = re.compile(f"^(?:几|哪|多少)[{HAN}]{{0,2}}$")

# Question and filler words: how a question is asked, not what it is about.
FILLERS = re.compile("|".join(sorted(
    """请问 一下 什么 多少 哪些 哪个 哪里 哪一 哪 是否 是不是 有没有 能不能 可不可以 能否 可否 怎么 怎样 如何 为什么
    吗 呢 啊 呀 吧 嘛 啥 叫啥 来着 了 的 是 有 一共 总共 共 具体 到底 究竟 那个 这个 现在 目前 都 几 个 之 所 请 告诉 我""".split(),
    key=len, reverse=True)))
