"""Configuration of the stream simulator and the registry of drift scenarios."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from . import vocab


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. Everything written is a deterministic function of this object."""

    days: int = 14
    queries_per_day: int = 2000
    seed: int = 7
    start_date: str = "2026-01-01"      # first day, ISO date (UTC)
    drift_strength: float = 1.0         # 0 = no drift at all, 1 = default, 2 = strong
    scenario: str = "default"           # a key of SCENARIOS ("default", "none", "sudden", ...)
    results_per_query: int = 10
    seed_days: int = 4                  # the "seed period" at the start
    evolving_window_days: int = 9       # the evolving test set's days: the three 3-day windows at the end
    seed_judgments: int = 3000          # judged pairs in the seed set
    test_judgments: int = 1500          # judged pairs in EACH test set (static, evolving)
    evolving_test_judgments: int | None = None  # judged pairs in the evolving set; None: test_judgments
    # --- extra knobs (defaults are what the project uses) ---
    products: int = 900                 # base products before translation (about 4.5 docs each)
    typo_rate: float = 0.10             # share of queries with one typo
    glossary_never_fraction: float = 0.4  # share of new slang/brands/types the glossary never gets
    glossary_lag_days: int = 3          # typical delay before the glossary learns a new term

    def validate(self) -> "SimulationConfig":
        if self.days < 1:
            raise ValueError("days must be >= 1")
        if self.queries_per_day < 1:
            raise ValueError("queries_per_day must be >= 1")
        if self.results_per_query < 1:
            raise ValueError("results_per_query must be >= 1")
        if self.drift_strength < 0:
            raise ValueError("drift_strength must be >= 0")
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; known: {sorted(SCENARIOS)}")
        if SCENARIOS[self.scenario].catalog_style not in CATALOG_STYLES:
            raise ValueError(f"scenario {self.scenario!r} names an unknown catalogue style "
                             f"{SCENARIOS[self.scenario].catalog_style!r}; known: {sorted(CATALOG_STYLES)}")
        if not 0.0 <= self.glossary_never_fraction <= 1.0:
            raise ValueError("glossary_never_fraction must be within [0, 1]")
        if self.seed_days < 1 or self.evolving_window_days < 1:
            raise ValueError("seed_days and evolving_window_days must be >= 1")
        if self.evolving_test_judgments is not None and self.evolving_test_judgments < 1:
            raise ValueError("evolving_test_judgments must be >= 1")
        if self.products < 50:
            raise ValueError("products must be >= 50")
        dt.date.fromisoformat(self.start_date)
        return self

    @property
    def evolving_judgments(self) -> int:
        """Judged pairs in the evolving test set."""
        return self.test_judgments if self.evolving_test_judgments is None else self.evolving_test_judgments

    @property
    def start(self) -> dt.date:
        return dt.date.fromisoformat(self.start_date)

    def day(self, index: int) -> dt.date:
        return self.start + dt.timedelta(days=index)

    def day_str(self, index: int) -> str:
        return self.day(index).isoformat()

    @property
    def effective_strength(self) -> float:
        return float(self.drift_strength) * SCENARIOS[self.scenario].strength_multiplier

    @property
    def catalog_style(self) -> "CatalogStyle":
        return CATALOG_STYLES[SCENARIOS[self.scenario].catalog_style]


@dataclass(frozen=True)
class CatalogStyle:
    """How the catalogue shows a product's structured attributes. Labels and truth never change with it:
    only what the catalogue (and the glossary) tell the pipeline does."""

    name: str
    renamed: tuple[tuple[str, str], ...] = ()   # (our attribute name, the name this catalogue uses)
    dropped: tuple[str, ...] = ()               # attributes this catalogue does not have
    glossary: bool = True                       # whether landing/knowledge/glossary.parquet is written

    def present(self, attributes: dict) -> dict:
        """``attributes`` (our names) as this catalogue shows them."""
        names = dict(self.renamed)
        return {names.get(k, k): v for k, v in attributes.items() if k not in self.dropped}


CATALOG_STYLES: dict[str, CatalogStyle] = {style.name: style for style in (
    CatalogStyle("standard"),
    # a shop whose catalogue has no product taxonomy, its own attribute names and no glossary
    CatalogStyle("no-category", renamed=(("brand", "maker"), ("colour", "shade"), ("material", "fabric"),
                                         ("size", "fit"), ("audience", "for")),
                 dropped=("category", "department"), glossary=False),
)}


@dataclass(frozen=True)
class DriftScenario:
    """How the stream drifts (intensities are multiplied by the effective drift strength) and which
    catalogue style it shows (a key of CATALOG_STYLES)."""

    name: str
    description: str
    catalog_style: str = "standard"
    strength_multiplier: float = 1.0    # 0 turns every drift off
    new_brands: int = len(vocab.NEW_BRANDS)   # brands launched mid-stream
    new_types: int = len(vocab.NEW_TYPES)     # product types launched mid-stream
    slang: bool = True                  # slang terms replace category words
    language_shift: float = 1.5         # minor languages' weight grows by (1 + shift * t)
    length_shift: float = 0.6           # P(k attributes) grows by exp(shift * t * k)
    burst: bool = False                 # all launches on one day (a sudden trend) vs spread out
    ramp_days: float = 3.0              # days until a launch/slang reaches its full share
    demand_boost: float = 2.0           # demand multiplier of launched products at full ramp
    slang_max_share: float = 0.8        # share of a concept's queries using its slang at full ramp
    trend_boost: float = 2.0            # demand multiplier of a category at full ramp of its slang: slang
                                        # comes with a trend, so the drifted queries are a real share of traffic


SCENARIOS: dict[str, DriftScenario] = {}


def register_scenario(scenario: DriftScenario) -> DriftScenario:
    """Add (or replace) a scenario in the registry; returns it."""
    SCENARIOS[scenario.name] = scenario
    return scenario


register_scenario(DriftScenario(
    "default", "gradual drift: launches spread over the post-seed days, growing minor languages "
    "and query length, slang creeping in"))
register_scenario(DriftScenario("none", "stationary stream (same as drift_strength=0)",
                                strength_multiplier=0.0))
register_scenario(DriftScenario(
    "sudden", "a trend burst: every launch and slang term arrives on one mid-stream day and "
    "ramps up within a day", burst=True, ramp_days=1.0, demand_boost=3.0))
register_scenario(DriftScenario(
    "no-category", "the default drift, shown by a catalogue unlike ours: no category or department "
    "attribute, the other attributes under other names (maker, shade, fabric, fit, for), no glossary",
    catalog_style="no-category"))
