"""An autointerp backend in a package of its own: it names the token the prompt marks `<<like this>>` most."""

from __future__ import annotations

import re
from collections import Counter

from autointerp.llm import ChatBackend, ChatRequest, ChatResponse


class EchoBackend(ChatBackend):
    """Answers every request with `the token <most often marked token>.`; needs no model and no network."""

    backend = "echo"

    def generate(self, request: ChatRequest) -> ChatResponse:
        prompt = request.messages[-1].content
        marked = Counter(token.strip() for token in re.findall(r"<<(.+?)>>", prompt))
        token = marked.most_common(1)[0][0] if marked else "nothing"
        words = prompt.split()
        return ChatResponse(text=f" the token {token}.", input_tokens=len(words), output_tokens=3)


def create_echo_backend(model: str) -> EchoBackend:
    """Entry-point factory: `echo:<anything>` -> EchoBackend."""
    return EchoBackend(model)
