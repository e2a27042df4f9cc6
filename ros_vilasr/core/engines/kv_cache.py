"""Key/value caches kept across a dialogue's turns, so turn N+1 prefills only its new tokens.

A ``Past`` is what the model has already seen of one dialogue: the key/values of the first
``length`` tokens of its encoding, the images among them, and the mRoPE position the next token
takes. ``PastStore`` holds them by session key under a token budget: finished dialogues are dropped
at once (``forget``), and when the budget is exceeded the least recently used are evicted; a
dialogue whose past was evicted is simply prefilled in full on its next turn.

Batches of dialogues at different turns share one forward pass: ``stack`` lays their pasts side
by side, left-padded to the longest, and ``row_layers`` cuts each row's valid tokens back out.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from transformers import DynamicCache


@dataclass
class Past:
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer (1, kv heads, length, head dim)
    length: int  # tokens of the encoding whose key/values these are
    images: int  # images among them
    next_position: int  # the mRoPE position of the token after them
    encoding: object  # the DialogueEncoding they belong to (a rebuilt encoding invalidates them)


class PastStore:
    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens
        self._pasts: OrderedDict[str, Past] = OrderedDict()
        self.evictions = 0

    @property
    def tokens(self) -> int:
        return sum(p.length for p in self._pasts.values())

    def take(self, key: str, encoding) -> Past | None:
        """The dialogue's past, removed from the store (put it back with ``put``)."""
        past = self._pasts.pop(key, None)
        return past if past is not None and past.encoding is encoding else None

    def put(self, key: str, past: Past) -> None:
        self._pasts[key] = past
        total = self.tokens
        while total > self.max_tokens and self._pasts:
            _, evicted = self._pasts.popitem(last=False)
            total -= evicted.length
            self.evictions += 1

    def drop(self, key: str) -> None:
        self._pasts.pop(key, None)

    def clear(self) -> None:
        self._pasts.clear()


def stack(pasts: list[Past | None], config, device) -> DynamicCache:
    """One cache for a batch: row i holds its past right-aligned in the width of the longest past
    (zeros before it, masked out by the caller's attention mask)."""
    cache = DynamicCache(config=config)
    width = max(p.length if p else 0 for p in pasts)
    if width == 0:
        return cache
    template = next(p for p in pasts if p)
    for k, (key0, value0) in enumerate(template.layers):
        if len(pasts) == 1:
            keys, values = key0, value0
        else:
            keys = key0.new_zeros((len(pasts), key0.shape[1], width, key0.shape[3]))
            values = value0.new_zeros((len(pasts), value0.shape[1], width, value0.shape[3]))
            for row, p in enumerate(pasts):
                if p:
                    keys[row, :, width - p.length:] = p.layers[k][0][0]
                    values[row, :, width - p.length:] = p.layers[k][1][0]
        cache.update(keys.to(device), values.to(device), k)
    return cache


def row_layers(cache: DynamicCache, row: int, columns: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Row ``row``'s key/values at cache columns ``columns`` (its own tokens, in order)."""
    layers = []
    for layer in cache.layers:
        k, v = layer.keys[row:row + 1], layer.values[row:row + 1]
        if columns == list(range(len(columns))):  # no padding before it: a view, no copy
            layers.append((k[:, :, :len(columns)], v[:, :, :len(columns)]))
        else:
            index = torch.tensor(columns, device=k.device)
            layers.append((k.index_select(2, index), v.index_select(2, index)))
    return layers
