"""One day of the query stream: intents -> query text -> retrieval -> production ranking ->
true labels -> clicks (position-based model) -> impression rows."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from . import vocab
from .catalog import Catalog, attribute_forms, category_forms, tokenize
from .config import SimulationConfig
from .drift import DriftSchedule

# Position-based click model.
EXAMINATION_EXPONENT = 0.8
ATTRACTIVENESS = np.array([0.05, 0.15, 0.45, 0.75])
DWELL_MEDIAN_MS = np.array([6_000.0, 12_000.0, 30_000.0, 60_000.0])
DWELL_SIGMA = 0.7
# Production ranker: known-term overlap + a little of the retriever's score + popularity + noise.
RANKER_RETRIEVAL_WEIGHT = 0.3
RANKER_POPULARITY_WEIGHT = 1.2
RANKER_NOISE = 2.0
COLD_START_POPULARITY = 0.15      # the ranker's prior for launched products
SLANG_RETRIEVAL_RECALL = 0.5      # the (semantic) retriever recognises new slang this often
REFORMULATION_RATE = 0.35
SHUFFLE_RATE = 0.2
FILLER_RATE = 0.12
MAX_SESSION = 5

_KEYBOARD = {
    "a": "qswz", "b": "vghn", "c": "xdfv", "d": "serfcx", "e": "wsdr", "f": "drtgvc", "g": "ftyhbv",
    "h": "gyujnb", "i": "ujko", "j": "huikmn", "k": "jiolm", "l": "kop", "m": "njk", "n": "bhjm",
    "o": "iklp", "p": "ol", "q": "wa", "r": "edft", "s": "awedxz", "t": "rfgy", "u": "yhji",
    "v": "cfgb", "w": "qase", "x": "zsdc", "y": "tghu", "z": "asx",
}


@dataclass
class LangIndex:
    lang: str
    docs: np.ndarray            # catalogue doc indices listed in this language
    products: np.ndarray
    avail: np.ndarray
    token_id: dict[str, int]
    weights: np.ndarray         # (n_docs, n_tokens) idf-weighted title term incidence, float32
    known: np.ndarray           # (n_tokens,) tokens the production ranker knows (seed catalogue)
    log_pop_ranker: np.ndarray  # the ranker's popularity prior (cold start for launches)


def build_indexes(catalog: Catalog) -> list[LangIndex]:
    out = []
    for li, lang in enumerate(vocab.LANGUAGES):
        docs = np.flatnonzero(catalog.d_lang == li)
        products = catalog.d_product[docs]
        avail = catalog.p_avail[products]
        token_lists = [sorted(set(tokenize(catalog.titles[d]))) for d in docs]
        token_id: dict[str, int] = {}
        for toks in token_lists:
            for t in toks:
                if t not in token_id:
                    token_id[t] = len(token_id)
        inc = np.zeros((len(docs), len(token_id)), dtype=np.float32)
        for j, toks in enumerate(token_lists):
            inc[j, [token_id[t] for t in toks]] = 1.0
        df = inc.sum(axis=0)
        idf = np.log1p(len(docs) / np.maximum(df, 1.0)).astype(np.float32)
        known = inc[avail == 0].sum(axis=0) > 0
        pop = catalog.p_pop[products] * np.where(avail > 0, COLD_START_POPULARITY, 1.0)
        out.append(LangIndex(lang, docs, products, avail, token_id, inc * idf, known, np.log(pop)))
    return out


@dataclass
class Query:
    lang: int
    product: int                # the target product the user has in mind
    attrs: tuple[int, ...]      # requested attribute slots (0 colour, 1 size, 2 material, 3 audience)
    brand: bool
    session: int
    text: str = ""
    retrieval_tokens: tuple[str, ...] = ()
    raw_tokens: tuple[str, ...] = ()
    slang: bool = False


def _typo(word: str, u_op: float, u_pos: float) -> str:
    if len(word) < 4:
        return word
    i = 1 + int(u_pos * (len(word) - 2))
    op = int(u_op * 4)
    if op == 0 and i + 1 < len(word):
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if op == 1:
        return word[:i] + word[i + 1:]
    if op == 2:
        return word[:i] + word[i] + word[i:]
    near = _KEYBOARD.get(word[i].lower())
    if near:
        return word[:i] + near[int(u_pos * 997) % len(near)] + word[i + 1:]
    return word[:i] + word[i + 1:]


def _pick(forms: list[str], u: float, primary: float) -> str:
    if len(forms) == 1 or u < primary:
        return forms[0]
    return forms[1 + int((u - primary) / (1 - primary) * (len(forms) - 1)) % (len(forms) - 1)]


def render(q: Query, day: int, u: np.ndarray, catalog: Catalog, drift: DriftSchedule,
           typo_rate: float) -> None:
    """Write the query text for an intent; sets text and the retriever's/ranker's tokens."""
    lang = vocab.LANGUAGES[q.lang]
    p = q.product
    cat = catalog.categories[catalog.p_cat[p]]
    parts: dict[str, tuple[str, list[str]]] = {}   # slot -> (surface text, expansion tokens)
    forms = category_forms(cat, lang)
    share, slang = drift.slang_share(lang, cat, day)
    expansion = [t for f in forms for t in tokenize(f)]
    if slang is not None and u[1] < share:
        q.slang = True
        parts["category"] = (slang, expansion if u[2] < SLANG_RETRIEVAL_RECALL else [])
    else:
        parts["category"] = (_pick(forms, u[0], 0.65), expansion)
    names = ("colour", "size", "material", "audience")
    for k in q.attrs:
        v = catalog.values(names[k])[catalog.p_attr[p, k]]
        if k == 1:
            size_word = _pick(vocab.split_forms(vocab.SIZE_WORD[q.lang]), u[19] * 2, 0.5)
            text = v if u[19] < 0.5 else f"{size_word} {v}"
            parts["size"] = (text, [v.lower()])
        else:
            f = attribute_forms(names[k], v, lang)
            parts[names[k]] = (_pick(f, u[20 + k], 0.8), [t for w in f for t in tokenize(w)])
    if q.brand:
        b = catalog.brands[catalog.p_brand[p]]
        parts["brand"] = (b, tokenize(b))
    if lang in vocab.ADJECTIVE_FIRST:
        order = ["brand", "audience", "colour", "material", "category", "size"]
    else:
        order = ["category", "brand", "audience", "colour", "material", "size"]
    slots = [s for s in order if s in parts]
    if u[3] < SHUFFLE_RATE and len(slots) > 1:
        keys = u[10:10 + len(slots)]
        slots = [slots[j] for j in np.argsort(keys, kind="stable")]
    texts = [parts[s][0] for s in slots]
    typo_ok = [len(t) >= 4 and s != "size" for s, t in zip(slots, texts)]
    typo_slot = None
    if u[8] < typo_rate and any(typo_ok):
        choices = [j for j, ok in enumerate(typo_ok) if ok]
        typo_slot = choices[int(u[9] * len(choices))]
        words = texts[typo_slot].split(" ")
        w = int(u[17] * 7919) % len(words)
        words[w] = _typo(words[w], u[16], u[17])
        texts[typo_slot] = " ".join(words)
    if u[5] < FILLER_RATE:
        filler = vocab.split_forms(vocab.FILLER_WORDS[q.lang])
        word = filler[int(u[6] * len(filler))]
        texts = [word] + texts if u[7] < 0.5 else texts + [word]
    text = " ".join(texts)
    if u[18] < 0.9:
        text = text.lower()
    q.text = text
    raw = tokenize(text)
    retrieval = list(raw)
    for j, s in enumerate(slots):
        if j != typo_slot:
            retrieval.extend(parts[s][1])
    q.raw_tokens = tuple(raw)
    q.retrieval_tokens = tuple(retrieval)


def simulate_day(day: int, config: SimulationConfig, catalog: Catalog, drift: DriftSchedule,
                 indexes: list[LangIndex]) -> dict[str, np.ndarray | list]:
    rng = np.random.default_rng([config.seed, 100, day])
    n = config.queries_per_day
    k_results = config.results_per_query

    # sessions: sizes, language, start time
    sizes = np.minimum(rng.geometric(0.55, size=n), MAX_SESSION)
    n_sessions = int(np.searchsorted(np.cumsum(sizes), n) + 1)
    sizes = sizes[:n_sessions].copy()
    sizes[-1] -= int(sizes.sum() - n)
    lang_w = drift.language_weights(day)
    s_lang = rng.choice(len(vocab.LANGUAGES), size=n_sessions, p=lang_w)
    hours = np.array(vocab.HOURLY_TRAFFIC)
    s_hour = rng.choice(24, size=n_sessions, p=hours / hours.sum())
    s_start = s_hour * 3600.0 + rng.random(n_sessions) * 3600.0
    q_session = np.repeat(np.arange(n_sessions), sizes)
    q_first = np.ones(n, dtype=bool)
    q_first[1:] = q_session[1:] != q_session[:-1]
    gaps = 5.0 + rng.exponential(40.0, size=n)
    gaps[q_first] = 0.0
    # cumulative gap within each session
    csum = np.cumsum(gaps)
    first_idx = np.flatnonzero(q_first)
    offsets = csum - np.repeat(csum[first_idx], sizes)
    q_sec = s_start[q_session] + offsets
    day_start = dt.datetime.combine(config.day(day), dt.time(), tzinfo=dt.timezone.utc)
    day_ms = int(day_start.timestamp() * 1000)
    q_ts = np.minimum(day_ms + (q_sec * 1000.0).astype(np.int64), day_ms + 86_400_000 - 1)

    # intents
    u_int = rng.random((n, 8))
    reform = (~q_first) & (u_int[:, 0] < REFORMULATION_RATE)
    len_p = drift.length_probs(day)
    k_attr = np.searchsorted(np.cumsum(len_p), u_int[:, 1] * (1 - 1e-12), side="right")
    brand_p = drift.brand_probability(day)
    q_lang = s_lang[q_session]
    targets = np.full(n, -1, dtype=np.int64)
    for li, idx in enumerate(indexes):
        need = np.flatnonzero((q_lang == li) & ~reform)
        if not len(need):
            continue
        prods = idx.products
        mult = np.array([drift.launch_multiplier(int(a), day) for a in idx.avail])
        trend = np.array([drift.trend_multiplier(idx.lang, cat, day) for cat in catalog.categories])
        w = catalog.p_pop[prods] * (catalog.category_demand * trend)[catalog.p_cat[prods]] * mult
        targets[need] = prods[rng.choice(len(prods), size=len(need), p=w / w.sum())]
    u_text = rng.random((n, 24))

    queries: list[Query] = []
    for i in range(n):
        if reform[i]:
            prev = queries[-1]
            attrs = list(prev.attrs)
            avail_slots = [k for k in range(4) if catalog.p_attr[prev.product, k] >= 0 and k not in attrs]
            brand = prev.brand
            if avail_slots:
                attrs.append(avail_slots[int(u_int[i, 2] * len(avail_slots))])
            else:
                brand = True
            q = Query(int(q_lang[i]), prev.product, tuple(sorted(attrs)), brand, int(q_session[i]))
        else:
            p = int(targets[i])
            slots = [k for k in range(4) if catalog.p_attr[p, k] >= 0]
            order = np.argsort(u_int[i, 3:7], kind="stable")
            chosen = [slots[j] for j in order if j < len(slots)][: int(k_attr[i])]
            launched_brand = catalog.brands[catalog.p_brand[p]] not in vocab.BASE_BRANDS
            bp = 0.75 if launched_brand else brand_p
            q = Query(int(q_lang[i]), p, tuple(sorted(chosen)), bool(u_int[i, 7] < bp),
                      int(q_session[i]))
        render(q, day, u_text[i], catalog, drift, config.typo_rate)
        queries.append(q)

    # retrieval + production ranking, per language
    shown = np.full((n, k_results), -1, dtype=np.int64)
    for li, idx in enumerate(indexes):
        qi = np.flatnonzero(q_lang == li)
        if not len(qi):
            continue
        V = len(idx.token_id)
        q_ret = np.zeros((len(qi), V), dtype=np.float32)
        q_rank = np.zeros((len(qi), V), dtype=np.float32)
        for r, i in enumerate(qi):
            ids = [idx.token_id[t] for t in queries[i].retrieval_tokens if t in idx.token_id]
            q_ret[r, ids] = 1.0
            ids = [idx.token_id[t] for t in queries[i].raw_tokens
                   if t in idx.token_id and idx.known[idx.token_id[t]]]
            q_rank[r, ids] = 1.0
        retrieval = q_ret @ idx.weights.T
        score = (q_rank @ idx.weights.T + RANKER_RETRIEVAL_WEIGHT * retrieval
                 + RANKER_POPULARITY_WEIGHT * idx.log_pop_ranker[None, :]
                 + rng.normal(0.0, RANKER_NOISE, size=retrieval.shape))
        live = (idx.avail <= day)[None, :]
        cand = (retrieval > 0) & live
        score = np.where(cand, score, np.where(live, score - 1e6, -np.inf))
        k = min(k_results, int(live.sum()))
        top = np.argpartition(-score, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(score, top, axis=1), axis=1, kind="stable")
        shown[qi, :k] = idx.docs[np.take_along_axis(top, order, axis=1)]

    # true labels of the shown documents
    valid = shown >= 0
    d = np.where(valid, shown, 0)
    prod = catalog.d_product[d]
    target = np.array([q.product for q in queries])
    req = np.zeros((n, 4), dtype=bool)
    for i, q in enumerate(queries):
        req[i, list(q.attrs)] = True
    req_brand = np.array([q.brand for q in queries])
    tc = catalog.p_cat[target]
    ta = catalog.p_attr[target]
    mism = ((catalog.p_attr[prod] != ta[:, None, :]) & req[:, None, :]).sum(axis=2)
    mism += (catalog.p_brand[prod] != catalog.p_brand[target][:, None]) & req_brand[:, None]
    same = catalog.p_cat[prod] == tc[:, None]
    labels = np.where(same, np.select([mism == 0, mism == 1], [3, 2], 1),
                      np.where(catalog.complement[tc[:, None], catalog.p_cat[prod]], 1, 0))

    # clicks
    pos = np.arange(1, k_results + 1)
    exam = 1.0 / pos ** EXAMINATION_EXPONENT
    p_click = exam[None, :] * ATTRACTIVENESS[labels]
    clicked = (rng.random((n, k_results)) < p_click) & valid
    dwell = rng.lognormal(np.log(DWELL_MEDIAN_MS[labels]), DWELL_SIGMA)
    dwell = np.where(clicked, np.round(dwell, 1), np.nan)

    # time order; ids assigned in time order
    q_order = np.lexsort((np.arange(n), q_ts))
    s_rank = np.empty(n_sessions, dtype=np.int64)
    s_first_ts = np.full(n_sessions, np.iinfo(np.int64).max)
    np.minimum.at(s_first_ts, q_session, q_ts)
    s_rank[np.lexsort((np.arange(n_sessions), s_first_ts))] = np.arange(n_sessions)
    stamp = config.day(day).strftime("%Y%m%d")
    flat = valid[q_order]
    n_per = flat.sum(axis=1)
    rep = np.repeat(q_order, n_per)
    request_ids = [f"q{stamp}-{r:06d}" for r in range(n)]
    session_ids = [f"s{stamp}-{s_rank[queries[i].session]:05d}" for i in range(n)]
    return {
        "request_id": np.repeat(np.array(request_ids, dtype=object), n_per),
        "ts": q_ts[rep],
        "session_id": np.array(session_ids, dtype=object)[rep],
        "query": np.array([queries[i].text for i in range(n)], dtype=object)[rep],
        "language": np.array([vocab.LANGUAGES[queries[i].lang] for i in range(n)], dtype=object)[rep],
        "doc_id": np.array(catalog.doc_ids, dtype=object)[shown[q_order][flat]],
        "position": np.broadcast_to(pos, (n, k_results))[flat].astype(np.int32),
        "clicked": clicked[q_order][flat],
        "dwell_ms": dwell[q_order][flat].astype(np.float64),
        # not written to the logs: evaluation only
        "label": labels[q_order][flat].astype(np.int8),
        "slang": np.array([q.slang for q in queries])[rep],
        "n_attrs": np.array([len(q.attrs) + int(q.brand) for q in queries])[rep],
        "n_tokens": np.array([len(q.raw_tokens) for q in queries])[rep],
    }
