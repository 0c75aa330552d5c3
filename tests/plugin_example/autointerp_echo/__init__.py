"""An autointerp backend in a package of its own: it names the token the prompt marks `<<like this>>` most."""

from __future__ import annotations

import re
from collections import Counter

from autointerp.llm import BackendKind, ChatBackend, ChatRequest, ChatResponse, ProbeLimits


class EchoBackend(ChatBackend):
    """Answers every request with `the token <most often marked token>.`; needs no model and no network."""

    backend = "echo"

    def generate(self, request: ChatRequest) -> ChatResponse:
        prompt = request.messages[-1].content
        marked = Counter(token.strip() for token in re.findall(r"<<(.+?)>>", prompt))
        token = marked.most_common(1)[0][0] if marked else "nothing"
        words = prompt.split()
        return ChatResponse(text=f" the token {token}.", input_tokens=len(words), output_tokens=3)


class EchoBackends(BackendKind[EchoBackend]):
    """Entry point `echo`: `echo:<anything>` -> EchoBackend, checked by the preflight like the built-ins."""

    def create(self, model: str) -> EchoBackend:
        return EchoBackend(model)

    def check(self, model: str, who: str, limits: ProbeLimits) -> list[str]:
        """Needs no key, server or file: nothing can be wrong, so no warning either."""
        return []
