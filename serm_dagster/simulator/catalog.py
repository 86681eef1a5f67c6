"""The product catalogue: products (category, brand, attributes) listed in several languages."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np

from . import vocab
from .config import SimulationConfig
from .drift import NEW_BRAND_DEPARTMENTS, DriftSchedule

_TOKEN = re.compile(r"\w+")
ATTRS = ("colour", "size", "material", "audience")
NO_COLOUR_DEPARTMENTS = frozenset({"beauty"})
LAUNCH_PRODUCTS_PER_BRAND = 24
LAUNCH_PRODUCTS_PER_TYPE = 30
EMPTY_ATTRIBUTES_SHARE = 0.02
# accessory -> main items it is sold "for" (titles like "socks for sneakers")
FOR_TARGETS: dict[str, tuple[str, ...]] = {
    "socks": ("sneakers", "running_shoes", "boots", "football"),
    "phone_case": ("smartphone",),
    "charger": ("smartphone", "laptop", "smartwatch"),
    "headphones": ("smartphone",),
    "backpack": ("laptop",),
    "mug": ("coffee_maker",),
}


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


@dataclass
class Catalog:
    categories: list[str]
    brands: list[str]
    colours: list[str]
    sizes: list[str]
    materials: list[str]
    audiences: list[str]
    # per product (index = product id)
    p_cat: np.ndarray
    p_brand: np.ndarray
    p_attr: np.ndarray          # (n_products, 4) int: colour, size, material, audience; -1 = n/a
    p_avail: np.ndarray         # day index from which the product exists
    p_pop: np.ndarray           # true popularity (demand weight)
    # per document (a product listed in one language)
    d_product: np.ndarray
    d_lang: np.ndarray          # index into vocab.LANGUAGES
    doc_ids: list[str]
    titles: list[str]
    descriptions: list[str]
    attributes: list[str]
    complement: np.ndarray      # (n_cat, n_cat) bool
    category_demand: np.ndarray
    departments: list[str] = field(default_factory=list)

    @property
    def n_products(self) -> int:
        return len(self.p_cat)

    def values(self, attr: str) -> list[str]:
        return {"colour": self.colours, "size": self.sizes, "material": self.materials,
                "audience": self.audiences}[attr]


def _forms(table: dict[str, tuple[str, ...]], concept: str, lang: str) -> list[str]:
    return vocab.split_forms(table[concept][vocab.lang_index(lang)])


def category_forms(cat: str, lang: str) -> list[str]:
    return _forms(vocab.CATEGORY_WORDS, cat, lang)


def attribute_forms(attr: str, value: str, lang: str) -> list[str]:
    if attr == "colour":
        return _forms(vocab.COLOUR_WORDS, value, lang)
    if attr == "material":
        return _forms(vocab.MATERIAL_WORDS, value, lang)
    if attr == "audience":
        return _forms(vocab.AUDIENCE_WORDS, value, lang)
    return [value]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def build_catalog(config: SimulationConfig, drift: DriftSchedule) -> Catalog:
    rng = np.random.default_rng([config.seed, 1])
    categories = list(vocab.CATEGORY_WORDS)
    cat_idx = {c: i for i, c in enumerate(categories)}
    colours = list(vocab.COLOUR_WORDS)
    sizes = list(vocab.SHOE_SIZES) + list(vocab.CLOTHING_SIZES)
    materials = list(vocab.MATERIAL_WORDS)
    audiences = list(vocab.AUDIENCE_WORDS)
    depts = list(vocab.DEPARTMENTS)

    launched_brands = [e for e in drift.events if e.kind == "new_brand"]
    launched_types = [e for e in drift.events if e.kind == "new_type"]
    brands = list(vocab.BASE_BRANDS) + [e.term for e in launched_brands]
    brand_idx = {b: i for i, b in enumerate(brands)}

    # which departments each base brand serves: one fixed, maybe a second one
    brand_depts: dict[str, list[str]] = {}
    second = rng.random(len(vocab.BASE_BRANDS))
    second_pick = rng.integers(0, len(depts), size=len(vocab.BASE_BRANDS))
    for i, b in enumerate(vocab.BASE_BRANDS):
        ds = [depts[i % len(depts)]]
        if second[i] < 0.5 and depts[second_pick[i]] not in ds:
            ds.append(depts[second_pick[i]])
        brand_depts[b] = ds
    for e in launched_brands:
        brand_depts[e.term] = list(NEW_BRAND_DEPARTMENTS[e.term])

    def dept_brands(dept: str, names: list[str]) -> list[int]:
        return [brand_idx[b] for b in names if dept in brand_depts[b]]

    demand = np.array([vocab.CATEGORY_DEMAND.get(c, 1.0) for c in categories])

    rows: list[tuple[int, int, int]] = []  # (category, brand, available_from)
    base_cats = [cat_idx[c] for c in vocab.BASE_CATEGORIES]
    w = np.sqrt(demand[base_cats])
    picks = rng.choice(base_cats, size=config.products, p=w / w.sum())
    brand_u = rng.random(config.products)
    for c, u in zip(picks, brand_u):
        cands = dept_brands(vocab.CATEGORY_SPEC[categories[c]][0], list(vocab.BASE_BRANDS))
        rows.append((int(c), cands[int(u * len(cands))], 0))
    for e in launched_types:
        c = cat_idx[e.concept.split(":", 1)[1]]
        dept = vocab.CATEGORY_SPEC[categories[c]][0]
        names = list(vocab.BASE_BRANDS) + [b.term for b in launched_brands if b.day_index <= e.day_index]
        cands = dept_brands(dept, names)
        for u in rng.random(LAUNCH_PRODUCTS_PER_TYPE):
            rows.append((c, cands[int(u * len(cands))], e.day_index))
    for e in launched_brands:
        ds = NEW_BRAND_DEPARTMENTS[e.term]
        cands = [cat_idx[c] for c in vocab.BASE_CATEGORIES if vocab.CATEGORY_SPEC[c][0] in ds]
        for u in rng.random(LAUNCH_PRODUCTS_PER_BRAND):
            rows.append((cands[int(u * len(cands))], brand_idx[e.term], e.day_index))

    n = len(rows)
    p_cat = np.array([r[0] for r in rows], dtype=np.int32)
    p_brand = np.array([r[1] for r in rows], dtype=np.int32)
    p_avail = np.array([r[2] for r in rows], dtype=np.int32)
    p_attr = np.full((n, 4), -1, dtype=np.int32)
    u = rng.random((n, 4))
    for i in range(n):
        dept, size_kind, mats, auds = vocab.CATEGORY_SPEC[categories[p_cat[i]]]
        if dept not in NO_COLOUR_DEPARTMENTS:
            p_attr[i, 0] = int(u[i, 0] * len(colours))
        if size_kind == "shoe":
            p_attr[i, 1] = int(u[i, 1] * len(vocab.SHOE_SIZES))
        elif size_kind == "clothing":
            p_attr[i, 1] = len(vocab.SHOE_SIZES) + int(u[i, 1] * len(vocab.CLOTHING_SIZES))
        if mats:
            p_attr[i, 2] = materials.index(mats[int(u[i, 2] * len(mats))])
        if auds:
            p_attr[i, 3] = audiences.index(auds[int(u[i, 3] * len(auds))])
    p_pop = rng.lognormal(0.0, 0.9, size=n)

    comp = np.zeros((len(categories), len(categories)), dtype=bool)
    for a, b in vocab.COMPLEMENTS:
        comp[cat_idx[a], cat_idx[b]] = comp[cat_idx[b], cat_idx[a]] = True

    # listings per language
    listing_p = np.array([vocab.LISTING_PROBABILITY[lang] for lang in vocab.LANGUAGES])
    listed = rng.random((n, len(vocab.LANGUAGES))) < listing_p
    fallback = rng.choice(len(vocab.LANGUAGES), size=n, p=listing_p / listing_p.sum())
    listed[~listed.any(axis=1), :] = False
    empty = ~listed.any(axis=1)
    listed[np.flatnonzero(empty), fallback[empty]] = True

    d_product, d_lang, doc_ids, titles, descs, attrs = [], [], [], [], [], []
    for i in range(n):
        for li in np.flatnonzero(listed[i]):
            lang = vocab.LANGUAGES[li]
            r = rng.random(12)
            title, desc = _write(i, lang, r, categories, brands, colours, sizes, materials,
                                 audiences, p_cat, p_brand, p_attr, comp)
            d_product.append(i)
            d_lang.append(int(li))
            doc_ids.append(f"P{i:06d}-{lang}")
            titles.append(title)
            descs.append(desc)
            attrs.append(_attributes_json(i, r[11], config, categories, brands, colours, sizes,
                                          materials, audiences, p_cat, p_brand, p_attr, p_avail))
    return Catalog(categories, brands, colours, sizes, materials, audiences, p_cat, p_brand, p_attr,
                   p_avail, p_pop, np.array(d_product, dtype=np.int32),
                   np.array(d_lang, dtype=np.int32), doc_ids, titles, descs, attrs, comp, demand,
                   depts)


def _write(i, lang, r, categories, brands, colours, sizes, materials, audiences, p_cat, p_brand,
           p_attr, comp) -> tuple[str, str]:
    li = vocab.lang_index(lang)
    cat = categories[p_cat[i]]
    forms = category_forms(cat, lang)
    cat_word = forms[0] if (r[0] < 0.75 or len(forms) == 1) else forms[1 + int(r[1] * (len(forms) - 1))]
    brand = brands[p_brand[i]]
    colour = material = audience = size = None
    if p_attr[i, 0] >= 0:
        colour = attribute_forms("colour", colours[p_attr[i, 0]], lang)[0]
    if p_attr[i, 1] >= 0:
        size = sizes[p_attr[i, 1]]
    if p_attr[i, 2] >= 0:
        material = attribute_forms("material", materials[p_attr[i, 2]], lang)[0]
    if p_attr[i, 3] >= 0 and r[2] > 0.15:  # sellers sometimes leave the audience out
        audience = attribute_forms("audience", audiences[p_attr[i, 3]], lang)[0]
    # complements named in the text: never a product type that only launches later
    comps = [c for c in np.flatnonzero(comp[p_cat[i]]) if categories[c] not in vocab.NEW_TYPES]
    comp_word = None
    if len(comps):
        comp_word = category_forms(categories[comps[int(r[3] * len(comps))]], lang)[0]
    for_phrase = None
    targets = FOR_TARGETS.get(cat, ())
    if targets and r[4] < 0.4:  # "socks for sneakers": lexically matches the main item's queries
        target_word = category_forms(targets[int(r[9] * len(targets))], lang)[0]
        fw = vocab.FOR_WORD[li]
        for_phrase = f"{target_word} {fw}" if lang == "tr" else f"{fw} {target_word}"

    if r[5] < 0.3 and colour and material:
        adj = [material, colour]
    else:
        adj = [w for w in (colour, material) if w]
    if lang in vocab.ADJECTIVE_FIRST:
        parts = [brand] + ([audience] if audience else []) + adj + [cat_word]
    else:
        parts = [brand, cat_word] + ([audience] if audience else []) + adj
    if for_phrase:
        parts.append(for_phrase)
    title = " ".join(p for p in parts if p)
    if size:
        size_word = vocab.split_forms(vocab.SIZE_WORD[li])[0]
        title += f", {size_word} {size}"
    if r[6] < 0.2:  # some sellers put the brand last
        title = _cap(title[len(brand) + 1:]) + f" - {brand}"

    d = vocab.DESCRIPTION[lang]
    intro = str(d["intro"]).format(cat=_cap(forms[0]) if lang != "tr" else forms[0], brand=brand)
    if lang == "tr":
        intro = _cap(intro)
    if colour:
        intro += str(d["colour"]).format(colour=colour)
    sentences = [intro + "."]
    if material:
        sentences.append(_cap(str(d["material"]).format(material=material)))
    if audience:
        sentences.append(_cap(str(d["audience"]).format(audience=audience)))
    if comp_word and r[7] < 0.6:
        sentences.append(_cap(str(d["comp"]).format(comp=comp_word)))
    closers = d["closers"]
    sentences.append(closers[int(r[8] * len(closers))])  # type: ignore[index]
    return title, " ".join(sentences)


def _attributes_json(i, r, config, categories, brands, colours, sizes, materials, audiences, p_cat,
                     p_brand, p_attr, p_avail) -> str:
    if p_avail[i] == 0 and r < EMPTY_ATTRIBUTES_SHARE:
        return "{}"  # a few listings come without structured attributes
    cat = categories[p_cat[i]]
    out: dict[str, str] = {"category": cat, "department": vocab.CATEGORY_SPEC[cat][0],
                           "brand": brands[p_brand[i]]}
    for k, attr in enumerate(ATTRS):
        v = p_attr[i, k]
        if v >= 0:
            out[attr] = {"colour": colours, "size": sizes, "material": materials,
                         "audience": audiences}[attr][v]
    if p_avail[i] > 0:
        out["available_from"] = config.day_str(int(p_avail[i]))
    return json.dumps(config.catalog_style.present(out), ensure_ascii=False)
