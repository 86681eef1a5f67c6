"""Local LLM agent through transformers: any causal LM id/folder, or a GGUF file in a folder.

Same prompt and strict parser as the HTTP agent. Nothing is downloaded (local_files_only): the
pipeline must not reach the network at run time. Loading GGUF needs the ``gguf`` package (and
``accelerate``, which transformers requires for GGUF loading).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path

from .base import TRANSIENT_ERROR, PairToJudge, ReasoningPath, stable_hash
from .prompt import PROMPT_TEXT_HASH, PROMPT_VERSION, build_messages, messages_as_plain_text, parse_judgement

log = logging.getLogger(__name__)


class LocalLLMAgent:
    backend = "transformers"

    def __init__(
        self,
        name: str,
        model_name_or_path: str | Path,
        gguf_file: str | None = None,
        temperature: float = 0.7,
        max_new_tokens: int = 200,
        device: str = "auto",
        *,
        seed_offset: int = 0,
        max_prompt_tokens: int = 2048,
    ):
        self.name = name
        self.model_name_or_path = str(model_name_or_path)
        self.gguf_file = gguf_file
        self.model = f"{Path(self.model_name_or_path).name}/{gguf_file}" if gguf_file else Path(self.model_name_or_path).name
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.seed_offset = seed_offset
        self.max_prompt_tokens = max_prompt_tokens
        self.prompt_version = PROMPT_VERSION
        self._tokenizer = None
        self._model = None
        self._torch_device = None
        self._lock = threading.Lock()  # one generation at a time: the seeded RNG is process-global

    def config_key(self) -> str:
        return stable_hash({
            "backend": self.backend, "model": self.model_name_or_path, "gguf_file": self.gguf_file,
            "weights": self._weights_fingerprint(), "prompt_version": self.prompt_version,
            "prompt_text": PROMPT_TEXT_HASH, "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens, "seed_offset": self.seed_offset,
            "max_prompt_tokens": self.max_prompt_tokens,
        })

    def _weights_fingerprint(self) -> str:
        # New weights in the same folder must not reuse old votes: size + mtime of the weight files.
        folder = Path(self.model_name_or_path)
        if not folder.is_dir():
            return ""
        names = [self.gguf_file] if self.gguf_file else None
        files = [folder / n for n in names] if names else sorted(
            p for p in folder.iterdir() if p.suffix in {".safetensors", ".bin", ".gguf", ".pt"}
        )
        return stable_hash([(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in files if f.exists()])

    # --- loading ----------------------------------------------------------------------------------

    def load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            device = self.device
        kwargs = {"local_files_only": True}
        if self.gguf_file:
            kwargs["gguf_file"] = self.gguf_file
        started = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(self.model_name_or_path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(self.model_name_or_path, **kwargs)
        model.to(device)
        model.eval()
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
            tokenizer.pad_token = tokenizer.eos_token
        self._tokenizer, self._model, self._torch_device = tokenizer, model, device
        log.info("loaded %s on %s in %.1fs", self.model, device, time.perf_counter() - started)

    def _prompt_ids(self, pair: PairToJudge):
        messages = build_messages(pair)
        tokenizer = self._tokenizer
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            add_special = False  # the template already has them
        else:
            text = messages_as_plain_text(messages)
            add_special = True
        encoded = tokenizer(text, return_tensors="pt", add_special_tokens=add_special)
        ids = encoded["input_ids"]
        if ids.shape[1] > self.max_prompt_tokens:
            # Keep the end: it holds the document and the answer instructions closest to generation.
            ids = ids[:, -self.max_prompt_tokens :]
        return ids

    # --- judging ----------------------------------------------------------------------------------

    def seed_for(self, pair: PairToJudge, path_index: int) -> int:
        # Per pair and path, so a path does not depend on which other pairs share its batch.
        return int(stable_hash([self.seed_offset, path_index, pair.content_hash()])[:8], 16)

    def generate_reply(self, pair: PairToJudge, path_index: int) -> tuple[str, int, int]:
        """(reply text, prompt tokens, completion tokens) for one pair and path."""
        import torch

        ids = self._prompt_ids(pair).to(self._torch_device)
        sampling = self.temperature > 0
        options = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": sampling,
            "pad_token_id": self._tokenizer.pad_token_id,
        }
        if sampling:
            options["temperature"] = self.temperature
        with self._lock, torch.random.fork_rng(devices=[] if self._torch_device == "cpu" else None), torch.inference_mode():
            torch.manual_seed(self.seed_for(pair, path_index))
            output = self._model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **options)
        new_tokens = output[0, ids.shape[1] :]
        reply = self._tokenizer.decode(new_tokens, skip_special_tokens=True)
        return reply, int(ids.shape[1]), int(new_tokens.shape[0])

    def judge(self, pairs: list[PairToJudge], path_index: int) -> list[ReasoningPath]:
        self.load()
        paths = []
        for pair in pairs:
            started = time.perf_counter()
            try:
                reply, prompt_tokens, completion_tokens = self.generate_reply(pair, path_index)
            except Exception as exc:  # e.g. out of memory: no answer, try again in a later run
                log.warning("%s failed on %s: %s", self.name, pair.pair_id, exc)
                paths.append(ReasoningPath.failed(f"{TRANSIENT_ERROR} {type(exc).__name__}: {exc}",
                                                  (time.perf_counter() - started) * 1000.0))
                continue
            path = parse_judgement(reply)
            paths.append(replace(path, latency_ms=(time.perf_counter() - started) * 1000.0,
                                 prompt_tokens=prompt_tokens, completion_tokens=completion_tokens))
        return paths
