"""The drift schedule: which launches and slang appear when, and how the mix moves per day."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from . import vocab
from .config import SCENARIOS, DriftScenario, SimulationConfig

# Base probabilities of asking for k = 0, 1, 2, 3 attributes (before drift).
BASE_LENGTH_PROBS = np.array([0.30, 0.40, 0.22, 0.08])
NEW_BRAND_DEPARTMENTS: dict[str, tuple[str, ...]] = {
    "Zephra": ("footwear", "apparel"), "Kovalo": ("electronics",), "Quillo": ("beauty", "accessories"),
    "Yunaro": ("kitchen", "home"), "Vexley": ("sports", "accessories"), "Tandemo": ("apparel", "footwear"),
}


@dataclass(frozen=True)
class DriftEvent:
    day_index: int
    kind: str                   # "new_brand" | "new_type" | "slang"
    concept: str                # "brand:zephra" | "category:air_fryer" | "category:sneakers"
    term: str                   # the brand name, the type's English word, the slang term
    language: str | None        # slang only
    glossary_lag_days: int | None  # None: the glossary never learns it

    def to_dict(self, config: SimulationConfig) -> dict:
        out = asdict(self)
        out["day"] = config.day_str(self.day_index)
        out["in_glossary"] = self.glossary_lag_days is not None
        out["glossary_added"] = (None if self.glossary_lag_days is None
                                 else config.day_str(self.day_index + self.glossary_lag_days))
        return out


class DriftSchedule:
    """Everything about drift that depends on the day; strength 0 gives a stationary stream."""

    def __init__(self, config: SimulationConfig):
        self.config = config
        self.scenario: DriftScenario = SCENARIOS[config.scenario]
        self.strength = config.effective_strength
        self.events: list[DriftEvent] = self._schedule()
        self.slang_day: dict[tuple[str, str], tuple[int, str]] = {
            (e.language, e.concept.split(":", 1)[1]): (e.day_index, e.term)
            for e in self.events if e.kind == "slang"}

    # -- events ---------------------------------------------------------------------------------
    def _schedule(self) -> list[DriftEvent]:
        cfg, sc = self.config, self.scenario
        if self.strength <= 0 or cfg.days < 2:
            return []
        rng = np.random.default_rng([cfg.seed, 2])
        lo = min(max(cfg.seed_days, 1), cfg.days - 1)
        hi = cfg.days - 1

        def day_at(frac: float) -> int:
            return int(lo + round(frac * (hi - lo)))

        n_brands = max(0, min(sc.new_brands, len(vocab.NEW_BRANDS)))
        n_types = max(0, min(sc.new_types, len(vocab.NEW_TYPES)))
        if sc.burst:
            brand_fr = [0.5] * n_brands
            type_fr = [0.5] * n_types
        else:
            brand_fr = list(np.linspace(0.0, 1.0, n_brands)) if n_brands > 1 else [0.0] * n_brands
            type_fr = list(np.linspace(0.1, 0.8, n_types)) if n_types > 1 else [0.3] * n_types
        slang_fr = rng.uniform(0.0, 0.9, size=len(vocab.SLANG))
        if sc.burst:
            slang_fr[:] = 0.5

        raw: list[tuple[int, str, str, str, str | None]] = []
        for name, fr in zip(vocab.NEW_BRANDS[:n_brands], brand_fr):
            raw.append((day_at(fr), "new_brand", f"brand:{name.lower()}", name, None))
        for cat, fr in zip(vocab.NEW_TYPES[:n_types], type_fr):
            en = vocab.split_forms(vocab.CATEGORY_WORDS[cat][0])[0]
            raw.append((day_at(fr), "new_type", f"category:{cat}", en, None))
        if sc.slang:
            for (lang, cat, term), fr in zip(vocab.SLANG, slang_fr):
                raw.append((day_at(float(fr)), "slang", f"category:{cat}", term, lang))

        # glossary lag: per kind, a fixed share is never added, the rest after a few days
        lags: list[int | None] = [None] * len(raw)
        for kind in ("new_brand", "new_type", "slang"):
            idx = [i for i, r in enumerate(raw) if r[1] == kind]
            if not idx:
                continue
            order = rng.permutation(len(idx))
            n_never = int(round(cfg.glossary_never_fraction * len(idx)))
            lag_lo = max(1, cfg.glossary_lag_days - 1)
            draws = rng.integers(lag_lo, cfg.glossary_lag_days + 3, size=len(idx))
            for rank, j in enumerate(order):
                lags[idx[j]] = None if rank < n_never else int(draws[j])
        events = [DriftEvent(r[0], r[1], r[2], r[3], r[4], lag) for r, lag in zip(raw, lags)]
        kind_order = {"new_type": 0, "new_brand": 1, "slang": 2}
        events.sort(key=lambda e: (e.day_index, kind_order[e.kind], e.language or "", e.term))
        return events

    # -- per-day mix ----------------------------------------------------------------------------
    def progress(self, day: int) -> float:
        """0 on the first day, `strength` on the last one."""
        if self.config.days < 2:
            return 0.0
        return self.strength * day / (self.config.days - 1)

    def language_weights(self, day: int) -> np.ndarray:
        t = self.progress(day)
        w = np.array([vocab.BASE_LANGUAGE_MIX[lang] for lang in vocab.LANGUAGES], dtype=float)
        minor = np.array([lang in vocab.MINOR_LANGUAGES for lang in vocab.LANGUAGES])
        w[minor] *= 1.0 + self.scenario.language_shift * t
        return w / w.sum()

    def length_probs(self, day: int) -> np.ndarray:
        t = self.progress(day)
        p = BASE_LENGTH_PROBS * np.exp(self.scenario.length_shift * t * np.arange(4))
        return p / p.sum()

    def brand_probability(self, day: int) -> float:
        return min(0.6, 0.2 + 0.08 * self.progress(day))

    def _ramp(self, since: int, day: int) -> float:
        if day < since:
            return 0.0
        return min(1.0, (day - since + 1) / max(self.scenario.ramp_days, 1e-9))

    def launch_multiplier(self, available_from: int, day: int) -> float:
        """Demand multiplier of a launched product (1 for products present from day 0)."""
        if available_from <= 0:
            return 1.0
        if day < available_from:
            return 0.0
        boost = max(1.0, self.scenario.demand_boost * max(self.strength, 1e-9))
        return 0.5 + (boost - 0.5) * self._ramp(available_from, day)

    def trend_multiplier(self, lang: str, category: str, day: int) -> float:
        """Demand multiplier of a category in a language: grows with the ramp of its slang (1 without)."""
        hit = self.slang_day.get((lang, category))
        if hit is None:
            return 1.0
        boost = max(1.0, 1.0 + (self.scenario.trend_boost - 1.0) * self.strength)
        return 1.0 + (boost - 1.0) * self._ramp(hit[0], day)

    def slang_share(self, lang: str, category: str, day: int) -> tuple[float, str | None]:
        hit = self.slang_day.get((lang, category))
        if hit is None:
            return 0.0, None
        since, term = hit
        share = min(0.9, self.scenario.slang_max_share * self.strength) * self._ramp(since, day)
        return share, term
