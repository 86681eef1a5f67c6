"""Vocabulary tables for the stream simulator.

Every multilingual table is a tuple in the order of :data:`LANGUAGES`; a cell may hold several
surface forms separated by ``|``: the first is the primary (catalogue) word, the others are
synonyms that shoppers (and some sellers) use. Nothing here depends on randomness.
"""

from __future__ import annotations

LANGUAGES: tuple[str, ...] = ("en", "de", "nl", "es", "fr", "it", "pt", "tr", "pl", "id")

FAMILIES: dict[str, tuple[str, ...]] = {
    "germanic": ("en", "de", "nl"),
    "romance": ("es", "fr", "it", "pt"),
    "minor": ("tr", "pl", "id"),
}
FAMILY_OF: dict[str, str] = {lang: fam for fam, langs in FAMILIES.items() for lang in langs}
MINOR_LANGUAGES: tuple[str, ...] = FAMILIES["minor"]

# Share of queries per language on day 0 (before drift).
BASE_LANGUAGE_MIX: dict[str, float] = {
    "en": 0.28, "de": 0.12, "nl": 0.06, "es": 0.10, "fr": 0.10, "it": 0.07, "pt": 0.07,
    "tr": 0.07, "pl": 0.07, "id": 0.06,
}

# Probability that a product is listed in a language (each product is listed in at least one).
LISTING_PROBABILITY: dict[str, float] = {
    "en": 0.70, "de": 0.50, "nl": 0.35, "es": 0.50, "fr": 0.50, "it": 0.40, "pt": 0.40,
    "tr": 0.45, "pl": 0.45, "id": 0.45,
}

# Languages whose titles put adjectives before the noun ("red leather sneakers").
ADJECTIVE_FIRST: frozenset[str] = frozenset({"en", "nl", "tr"})

DEPARTMENTS: tuple[str, ...] = (
    "footwear", "apparel", "accessories", "electronics", "home", "kitchen", "sports", "beauty",
)

SHOE_SIZES: tuple[str, ...] = tuple(str(s) for s in range(36, 47))
CLOTHING_SIZES: tuple[str, ...] = ("XS", "S", "M", "L", "XL")

#                 en                         de                              nl                               es                                       fr                                    it                                    pt                                 tr                                    pl                                       id
CATEGORY_WORDS: dict[str, tuple[str, ...]] = {
    # footwear
    "sneakers": ("sneakers|trainers", "Turnschuhe|Sneaker", "sneakers|gympen", "zapatillas|zapatillas deportivas", "baskets|tennis", "scarpe da ginnastica|sneakers", "tênis|sapatilhas", "spor ayakkabı|sneaker", "buty sportowe|trampki", "sepatu olahraga|sepatu kets"),
    "running_shoes": ("running shoes|runners", "Laufschuhe", "hardloopschoenen", "zapatillas de running|zapatillas para correr", "chaussures de running|chaussures de course", "scarpe da corsa|scarpe running", "tênis de corrida", "koşu ayakkabısı", "buty do biegania", "sepatu lari"),
    "boots": ("boots|ankle boots", "Stiefel|Boots", "laarzen|boots", "botas|botines", "bottes|bottines", "stivali|stivaletti", "botas|botinhas", "bot|çizme", "botki|kozaki", "sepatu bot|boots"),
    "sandals": ("sandals", "Sandalen", "sandalen", "sandalias", "sandales", "sandali", "sandálias", "sandalet", "sandały", "sandal"),
    # apparel
    "t_shirt": ("t-shirt|tee", "T-Shirt", "t-shirt|shirt", "camiseta", "t-shirt|tee-shirt", "maglietta|t-shirt", "camiseta|t-shirt", "tişört", "koszulka|t-shirt", "kaos"),
    "hoodie": ("hoodie|hooded sweatshirt", "Kapuzenpullover|Hoodie", "hoodie|trui met capuchon", "sudadera con capucha|sudadera", "sweat à capuche|hoodie", "felpa con cappuccio|felpa", "moletom com capuz|moletom", "kapüşonlu sweatshirt", "bluza z kapturem", "hoodie|jaket hoodie"),
    "jeans": ("jeans|denim trousers", "Jeans", "spijkerbroek|jeans", "vaqueros|jeans", "jean", "jeans", "calça jeans", "kot pantolon|jean", "dżinsy|jeansy", "celana jeans"),
    "jacket": ("jacket", "Jacke", "jas|jack", "chaqueta|cazadora", "veste|blouson", "giacca|giubbotto", "jaqueta|casaco", "ceket|mont", "kurtka", "jaket"),
    "dress": ("dress", "Kleid", "jurk", "vestido", "robe", "vestito|abito", "vestido", "elbise", "sukienka", "gaun|dress"),
    "socks": ("socks", "Socken", "sokken", "calcetines", "chaussettes", "calzini", "meias", "çorap", "skarpetki", "kaus kaki"),
    # accessories
    "sunglasses": ("sunglasses", "Sonnenbrille", "zonnebril", "gafas de sol", "lunettes de soleil", "occhiali da sole", "óculos de sol", "güneş gözlüğü", "okulary przeciwsłoneczne", "kacamata hitam"),
    "backpack": ("backpack|rucksack", "Rucksack", "rugzak", "mochila", "sac à dos", "zaino", "mochila", "sırt çantası", "plecak", "ransel|tas punggung"),
    "handbag": ("handbag|purse", "Handtasche", "handtas", "bolso", "sac à main", "borsa", "bolsa", "el çantası", "torebka", "tas tangan"),
    # electronics
    "smartphone": ("smartphone|mobile phone", "Smartphone|Handy", "smartphone|mobiele telefoon", "móvil|smartphone", "smartphone|portable", "smartphone|cellulare", "celular|smartphone", "akıllı telefon|cep telefonu", "smartfon|telefon komórkowy", "ponsel|hp"),
    "phone_case": ("phone case|phone cover", "Handyhülle", "telefoonhoesje", "funda de móvil|funda", "coque de téléphone|coque", "cover per cellulare|custodia", "capinha de celular|capa", "telefon kılıfı", "etui na telefon", "casing hp|case hp"),
    "headphones": ("headphones|earphones", "Kopfhörer", "koptelefoon|oortjes", "auriculares|cascos", "casque audio|écouteurs", "cuffie|auricolari", "fones de ouvido", "kulaklık", "słuchawki", "headphone|earphone"),
    "laptop": ("laptop|notebook", "Laptop|Notebook", "laptop", "portátil", "ordinateur portable", "portatile|notebook", "notebook|portátil", "dizüstü bilgisayar|laptop", "laptop", "laptop"),
    "charger": ("charger", "Ladegerät", "oplader", "cargador", "chargeur", "caricabatterie", "carregador", "şarj aleti", "ładowarka", "charger|pengisi daya"),
    "smartwatch": ("smartwatch", "Smartwatch", "smartwatch", "reloj inteligente|smartwatch", "montre connectée", "smartwatch|orologio intelligente", "relógio inteligente|smartwatch", "akıllı saat", "smartwatch|zegarek sportowy", "jam tangan pintar|smartwatch"),
    # home
    "lamp": ("lamp|table lamp", "Lampe|Tischlampe", "lamp", "lámpara", "lampe", "lampada", "luminária|abajur", "lamba|masa lambası", "lampa|lampka", "lampu"),
    "pillow": ("pillow|cushion", "Kissen", "kussen", "almohada|cojín", "oreiller|coussin", "cuscino", "travesseiro|almofada", "yastık", "poduszka", "bantal"),
    "blanket": ("blanket|throw", "Decke|Kuscheldecke", "deken|plaid", "manta", "couverture|plaid", "coperta|plaid", "cobertor|manta", "battaniye", "koc", "selimut"),
    # kitchen
    "frying_pan": ("frying pan|skillet", "Bratpfanne|Pfanne", "koekenpan", "sartén", "poêle", "padella", "frigideira", "tava", "patelnia", "wajan|penggorengan"),
    "kettle": ("kettle", "Wasserkocher", "waterkoker", "hervidor|hervidor de agua", "bouilloire", "bollitore", "chaleira", "su ısıtıcısı|kettle", "czajnik", "ketel|teko listrik"),
    "coffee_maker": ("coffee maker|coffee machine", "Kaffeemaschine", "koffiezetapparaat", "cafetera", "cafetière|machine à café", "macchina da caffè|caffettiera", "cafeteira", "kahve makinesi", "ekspres do kawy", "mesin kopi"),
    "mug": ("mug|cup", "Tasse|Becher", "mok|beker", "taza", "mug|tasse", "tazza", "caneca", "kupa|fincan", "kubek", "mug|cangkir"),
    # sports
    "yoga_mat": ("yoga mat", "Yogamatte", "yogamat", "esterilla de yoga", "tapis de yoga", "tappetino yoga", "tapete de yoga", "yoga matı", "mata do jogi", "matras yoga"),
    "football": ("football|soccer ball", "Fußball", "voetbal", "balón de fútbol|balón", "ballon de foot", "pallone da calcio|pallone", "bola de futebol", "futbol topu", "piłka nożna", "bola sepak"),
    "bicycle_helmet": ("bike helmet|bicycle helmet", "Fahrradhelm", "fietshelm", "casco de bicicleta|casco", "casque de vélo", "casco da bici", "capacete de bicicleta", "bisiklet kaskı", "kask rowerowy", "helm sepeda"),
    "dumbbells": ("dumbbells|weights", "Hanteln|Kurzhanteln", "halters|dumbbells", "mancuernas|pesas", "haltères", "manubri|pesi", "halteres", "dambıl|ağırlık", "hantle", "dumbel|barbel"),
    "water_bottle": ("water bottle|drinking bottle", "Trinkflasche", "drinkfles|waterfles", "botella de agua", "gourde|bouteille d'eau", "borraccia", "garrafa de água|squeeze", "su şişesi|matara", "bidon|butelka na wodę", "botol minum"),
    # beauty
    "shampoo": ("shampoo", "Shampoo", "shampoo", "champú", "shampooing", "shampoo", "xampu|shampoo", "şampuan", "szampon", "sampo"),
    "face_cream": ("face cream|moisturiser", "Gesichtscreme", "gezichtscrème", "crema facial", "crème visage", "crema viso", "creme facial|hidratante", "yüz kremi", "krem do twarzy", "krim wajah|pelembap"),
    "perfume": ("perfume|fragrance", "Parfüm|Duft", "parfum|geur", "perfume|colonia", "parfum", "profumo", "perfume", "parfüm", "perfumy", "parfum"),
    # product types that only appear mid-stream (see NEW_TYPES)
    "air_fryer": ("air fryer", "Heißluftfritteuse|Airfryer", "airfryer|heteluchtfriteuse", "freidora de aire|freidora sin aceite", "friteuse sans huile|airfryer", "friggitrice ad aria", "fritadeira elétrica|air fryer", "hava fritözü|airfryer", "frytkownica beztłuszczowa|air fryer", "air fryer|penggoreng udara"),
    "smart_ring": ("smart ring", "Smart Ring|smarter Ring", "slimme ring", "anillo inteligente", "bague connectée", "anello smart", "anel inteligente", "akıllı yüzük", "inteligentny pierścień", "cincin pintar"),
    "padel_racket": ("padel racket|padel bat", "Padelschläger", "padelracket", "pala de pádel", "raquette de padel", "racchetta da padel", "raquete de padel", "padel raketi", "rakieta do padla", "raket padel"),
}

# category -> (department, size kind or None, materials, audiences)
_FOOT_MAT = ("leather", "synthetic", "rubber", "wool")
_ALL_AUD = ("men", "women", "kids", "unisex")
CATEGORY_SPEC: dict[str, tuple[str, str | None, tuple[str, ...], tuple[str, ...]]] = {
    "sneakers": ("footwear", "shoe", ("leather", "synthetic", "denim"), _ALL_AUD),
    "running_shoes": ("footwear", "shoe", ("synthetic", "polyester", "rubber"), ("men", "women", "kids")),
    "boots": ("footwear", "shoe", ("leather", "synthetic", "wool", "rubber"), ("men", "women", "kids")),
    "sandals": ("footwear", "shoe", ("leather", "rubber", "synthetic"), _ALL_AUD),
    "t_shirt": ("apparel", "clothing", ("cotton", "polyester", "organic"), _ALL_AUD),
    "hoodie": ("apparel", "clothing", ("cotton", "polyester", "wool"), _ALL_AUD),
    "jeans": ("apparel", "clothing", ("denim", "cotton"), ("men", "women", "kids")),
    "jacket": ("apparel", "clothing", ("leather", "polyester", "wool", "denim"), ("men", "women", "kids")),
    "dress": ("apparel", "clothing", ("cotton", "polyester", "wool"), ("women", "kids")),
    "socks": ("apparel", "clothing", ("cotton", "wool", "polyester"), _ALL_AUD),
    "sunglasses": ("accessories", None, ("plastic", "aluminium", "glass"), _ALL_AUD),
    "backpack": ("accessories", None, ("polyester", "leather", "cotton"), _ALL_AUD),
    "handbag": ("accessories", None, ("leather", "synthetic", "cotton"), ("women",)),
    "smartphone": ("electronics", None, ("aluminium", "plastic", "glass"), ()),
    "phone_case": ("electronics", None, ("silicone", "leather", "plastic"), ()),
    "headphones": ("electronics", None, ("plastic", "aluminium"), ()),
    "laptop": ("electronics", None, ("aluminium", "plastic"), ()),
    "charger": ("electronics", None, ("plastic",), ()),
    "smartwatch": ("electronics", None, ("aluminium", "stainless steel", "silicone"), _ALL_AUD),
    "lamp": ("home", None, ("wood", "glass", "ceramic", "aluminium"), ()),
    "pillow": ("home", None, ("cotton", "polyester", "wool"), ()),
    "blanket": ("home", None, ("wool", "cotton", "polyester"), ()),
    "frying_pan": ("kitchen", None, ("stainless steel", "aluminium", "ceramic"), ()),
    "kettle": ("kitchen", None, ("stainless steel", "glass", "plastic"), ()),
    "coffee_maker": ("kitchen", None, ("stainless steel", "plastic"), ()),
    "mug": ("kitchen", None, ("ceramic", "glass", "stainless steel"), ()),
    "yoga_mat": ("sports", None, ("rubber", "synthetic", "organic"), ()),
    "football": ("sports", None, ("synthetic", "leather"), ("kids", "unisex")),
    "bicycle_helmet": ("sports", "clothing", ("plastic",), ("men", "women", "kids")),
    "dumbbells": ("sports", None, ("rubber", "stainless steel"), ()),
    "water_bottle": ("sports", None, ("stainless steel", "plastic", "glass", "aluminium"), ()),
    "shampoo": ("beauty", None, ("organic",), ("men", "women", "kids")),
    "face_cream": ("beauty", None, ("organic",), ("men", "women")),
    "perfume": ("beauty", None, (), ("men", "women", "unisex")),
    "air_fryer": ("kitchen", None, ("stainless steel", "plastic"), ()),
    "smart_ring": ("electronics", None, ("stainless steel", "aluminium"), ("men", "women", "unisex")),
    "padel_racket": ("sports", None, ("synthetic",), ("men", "women", "kids")),
}

# Product types that appear mid-stream (only when drift is on).
NEW_TYPES: tuple[str, ...] = ("air_fryer", "smart_ring", "padel_racket")
BASE_CATEGORIES: tuple[str, ...] = tuple(c for c in CATEGORY_WORDS if c not in NEW_TYPES)

# Complementary categories (symmetric): a socks item for a sneakers query is "related" (label 1).
COMPLEMENTS: tuple[tuple[str, str], ...] = (
    ("sneakers", "socks"), ("running_shoes", "socks"), ("boots", "socks"), ("football", "socks"),
    ("running_shoes", "water_bottle"), ("sandals", "sunglasses"), ("dress", "handbag"),
    ("jeans", "t_shirt"), ("hoodie", "t_shirt"), ("smartphone", "phone_case"),
    ("smartphone", "charger"), ("smartphone", "headphones"), ("laptop", "charger"),
    ("laptop", "backpack"), ("smartwatch", "charger"), ("pillow", "blanket"),
    ("coffee_maker", "mug"), ("kettle", "mug"), ("yoga_mat", "water_bottle"),
    ("dumbbells", "yoga_mat"), ("bicycle_helmet", "water_bottle"), ("shampoo", "face_cream"),
    ("air_fryer", "frying_pan"), ("smart_ring", "charger"), ("padel_racket", "water_bottle"),
    ("padel_racket", "sneakers"),
)

COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "black": ("black", "schwarz", "zwart", "negro", "noir", "nero", "preto", "siyah", "czarny", "hitam"),
    "white": ("white", "weiß|weiss", "wit", "blanco", "blanc", "bianco", "branco", "beyaz", "biały", "putih"),
    "red": ("red", "rot", "rood", "rojo", "rouge", "rosso", "vermelho", "kırmızı", "czerwony", "merah"),
    "blue": ("blue|navy", "blau", "blauw", "azul", "bleu", "blu", "azul", "mavi", "niebieski", "biru"),
    "green": ("green", "grün", "groen", "verde", "vert", "verde", "verde", "yeşil", "zielony", "hijau"),
    "grey": ("grey|gray", "grau", "grijs", "gris", "gris", "grigio", "cinza", "gri", "szary", "abu-abu"),
    "pink": ("pink", "rosa|pink", "roze", "rosa", "rose", "rosa", "rosa", "pembe", "różowy", "merah muda|pink"),
    "beige": ("beige", "beige", "beige", "beige", "beige", "beige", "bege", "bej", "beżowy", "krem"),
    "yellow": ("yellow", "gelb", "geel", "amarillo", "jaune", "giallo", "amarelo", "sarı", "żółty", "kuning"),
    "brown": ("brown", "braun", "bruin", "marrón", "marron", "marrone", "marrom|castanho", "kahverengi", "brązowy", "coklat"),
}

MATERIAL_WORDS: dict[str, tuple[str, ...]] = {
    "leather": ("leather", "Leder", "leer", "cuero|piel", "cuir", "pelle|cuoio", "couro", "deri", "skóra|skórzane", "kulit"),
    "synthetic": ("synthetic", "Synthetik", "synthetisch", "sintético", "synthétique", "sintetico", "sintético", "sentetik", "syntetyczne", "sintetis"),
    "cotton": ("cotton", "Baumwolle", "katoen", "algodón", "coton", "cotone", "algodão", "pamuk", "bawełna", "katun"),
    "wool": ("wool", "Wolle", "wol", "lana", "laine", "lana", "lã", "yün", "wełna", "wol"),
    "polyester": ("polyester", "Polyester", "polyester", "poliéster", "polyester", "poliestere", "poliéster", "polyester", "poliester", "poliester"),
    "denim": ("denim", "Denim", "denim", "denim|mezclilla", "denim", "denim", "denim", "denim|kot", "denim|dżins", "denim"),
    "stainless steel": ("stainless steel", "Edelstahl", "roestvrij staal|rvs", "acero inoxidable", "acier inoxydable|inox", "acciaio inox", "aço inoxidável|inox", "paslanmaz çelik", "stal nierdzewna", "stainless steel|baja tahan karat"),
    "plastic": ("plastic", "Kunststoff|Plastik", "kunststof|plastic", "plástico", "plastique", "plastica", "plástico", "plastik", "plastik", "plastik"),
    "glass": ("glass", "Glas", "glas", "vidrio|cristal", "verre", "vetro", "vidro", "cam", "szkło", "kaca"),
    "ceramic": ("ceramic", "Keramik", "keramiek", "cerámica", "céramique", "ceramica", "cerâmica", "seramik", "ceramika", "keramik"),
    "aluminium": ("aluminium|aluminum", "Aluminium", "aluminium", "aluminio", "aluminium", "alluminio", "alumínio", "alüminyum", "aluminium", "aluminium"),
    "silicone": ("silicone", "Silikon", "siliconen", "silicona", "silicone", "silicone", "silicone", "silikon", "silikon", "silikon"),
    "rubber": ("rubber", "Gummi", "rubber", "goma|caucho", "caoutchouc", "gomma", "borracha", "kauçuk", "guma", "karet"),
    "wood": ("wood|wooden", "Holz", "hout", "madera", "bois", "legno", "madeira", "ahşap", "drewno", "kayu"),
    "organic": ("organic", "Bio", "biologisch|bio", "orgánico|bio", "bio", "biologico|bio", "orgânico", "organik", "organiczny|bio", "organik"),
}

AUDIENCE_WORDS: dict[str, tuple[str, ...]] = {
    "men": ("men|mens", "Herren|Männer", "heren|mannen", "hombre", "homme", "uomo", "masculino", "erkek", "męskie|męski", "pria"),
    "women": ("women|womens", "Damen|Frauen", "dames|vrouwen", "mujer", "femme", "donna", "feminino", "kadın", "damskie|damski", "wanita"),
    "kids": ("kids|children", "Kinder", "kinderen|kids", "niños|infantil", "enfant|enfants", "bambini|bambino", "infantil|criança", "çocuk", "dziecięce|dla dzieci", "anak|anak-anak"),
    "unisex": ("unisex", "Unisex", "unisex", "unisex", "mixte|unisexe", "unisex", "unissex", "unisex", "unisex", "unisex"),
}

SIZE_WORD: tuple[str, ...] = ("size", "Größe|Gr.", "maat", "talla", "taille", "taglia", "tamanho", "beden|numara", "rozmiar", "ukuran")
FOR_WORD: tuple[str, ...] = ("for", "für", "voor", "para", "pour", "per", "para", "için", "do", "untuk")

FILLER_WORDS: tuple[str, ...] = (
    "cheap|buy|best|sale|online|new|deal",
    "günstig|kaufen|beste|angebot|online|neu",
    "goedkoop|kopen|beste|aanbieding|online|nieuw",
    "barato|comprar|mejor|oferta|online|nuevo",
    "pas cher|acheter|meilleur|promo|en ligne|nouveau",
    "economico|comprare|migliore|offerta|online|nuovo",
    "barato|comprar|melhor|promoção|online|novo",
    "ucuz|satın al|en iyi|indirim|online|yeni",
    "tanie|kup|najlepsze|promocja|online|nowe",
    "murah|beli|terbaik|promo|online|baru",
)

# Description sentence pieces per language: intro (with {cat}, {brand}), colour, material,
# audience, complement, closers.
DESCRIPTION: dict[str, dict[str, object]] = {
    "en": {"intro": "{cat} by {brand}", "colour": " in {colour}", "material": "Made of {material}.", "audience": "Designed for {audience}.", "comp": "Goes well with {comp}.", "closers": ("Durable and easy to care for.", "Free returns within 30 days.", "A reliable choice for everyday use.")},
    "de": {"intro": "{cat} von {brand}", "colour": " in {colour}", "material": "Aus {material} gefertigt.", "audience": "Für {audience}.", "comp": "Passt gut zu {comp}.", "closers": ("Langlebig und pflegeleicht.", "Kostenlose Rücksendung innerhalb von 30 Tagen.", "Ideal für den Alltag.")},
    "nl": {"intro": "{cat} van {brand}", "colour": " in {colour}", "material": "Gemaakt van {material}.", "audience": "Voor {audience}.", "comp": "Past goed bij {comp}.", "closers": ("Duurzaam en makkelijk te onderhouden.", "Gratis retourneren binnen 30 dagen.", "Ideaal voor dagelijks gebruik.")},
    "es": {"intro": "{cat} de {brand}", "colour": " en color {colour}", "material": "Fabricado en {material}.", "audience": "Pensado para {audience}.", "comp": "Combina bien con {comp}.", "closers": ("Resistente y fácil de cuidar.", "Devolución gratuita en 30 días.", "Perfecto para el día a día.")},
    "fr": {"intro": "{cat} de {brand}", "colour": " coloris {colour}", "material": "Fabriqué en {material}.", "audience": "Conçu pour {audience}.", "comp": "Se marie bien avec {comp}.", "closers": ("Résistant et facile d'entretien.", "Retour gratuit sous 30 jours.", "Idéal pour tous les jours.")},
    "it": {"intro": "{cat} di {brand}", "colour": " colore {colour}", "material": "Realizzato in {material}.", "audience": "Pensato per {audience}.", "comp": "Si abbina bene a {comp}.", "closers": ("Resistente e facile da curare.", "Reso gratuito entro 30 giorni.", "Perfetto per l'uso quotidiano.")},
    "pt": {"intro": "{cat} da {brand}", "colour": " na cor {colour}", "material": "Feito de {material}.", "audience": "Pensado para {audience}.", "comp": "Combina bem com {comp}.", "closers": ("Resistente e fácil de cuidar.", "Devolução grátis em 30 dias.", "Ideal para o dia a dia.")},
    "tr": {"intro": "{brand} {cat}", "colour": ", {colour} renk", "material": "{material} malzemeden üretilmiştir.", "audience": "{audience} için tasarlandı.", "comp": "{comp} ile iyi uyum sağlar.", "closers": ("Dayanıklı ve bakımı kolay.", "30 gün içinde ücretsiz iade.", "Günlük kullanım için ideal.")},
    "pl": {"intro": "{cat} marki {brand}", "colour": " w kolorze {colour}", "material": "Wykonane z materiału: {material}.", "audience": "Przeznaczone dla: {audience}.", "comp": "Świetnie pasuje do: {comp}.", "closers": ("Trwałe i łatwe w pielęgnacji.", "Darmowy zwrot w ciągu 30 dni.", "Idealne na co dzień.")},
    "id": {"intro": "{cat} dari {brand}", "colour": " warna {colour}", "material": "Terbuat dari {material}.", "audience": "Dirancang untuk {audience}.", "comp": "Cocok dipadukan dengan {comp}.", "closers": ("Awet dan mudah dirawat.", "Gratis retur dalam 30 hari.", "Pilihan tepat untuk sehari-hari.")},
}

BASE_BRANDS: tuple[str, ...] = (
    "Nordvik", "Altura", "Brisa", "Kestrel", "Lumora", "Vantor", "Solenne", "Fjordline",
    "Castellan", "Mirabel", "Orbis", "Tidewell", "Halden", "Corvina", "Elmstead", "Veloce",
    "Sabira", "Terrano", "Novalis", "Quarto", "Aurelio", "Bravura", "Calder", "Dunavi",
    "Estrela", "Folkeby", "Granito", "Hikari", "Isolde", "Jarrow", "Lunden", "Marisol",
    "Nimbo", "Oakhurst", "Pavona", "Rivela", "Stellan", "Tessaro", "Valka", "Wrenly",
)
# Brands launched mid-stream (only when drift is on).
NEW_BRANDS: tuple[str, ...] = ("Zephra", "Kovalo", "Quillo", "Yunaro", "Vexley", "Tandemo")

# Slang that replaces the usual word for a category once it appears: (language, category, term).
# The production ranker does not know these terms; the glossary learns them late or never.
SLANG: tuple[tuple[str, str, str], ...] = (
    ("en", "sneakers", "kicks"), ("en", "headphones", "cans"), ("en", "sunglasses", "shades"),
    ("de", "sneakers", "Treter"), ("de", "headphones", "Buds"), ("de", "sunglasses", "Sonnis"),
    ("nl", "sneakers", "pattas"), ("nl", "headphones", "dopjes"), ("nl", "sunglasses", "zonnie"),
    ("es", "sneakers", "tenis"), ("es", "headphones", "auris"), ("es", "sunglasses", "gafitas"),
    ("fr", "sneakers", "pompes"), ("fr", "headphones", "écoutes"), ("fr", "sunglasses", "solaires"),
    ("it", "sneakers", "scarpette"), ("it", "headphones", "cuffiette"), ("it", "sunglasses", "occhialoni"),
    ("pt", "sneakers", "pisante"), ("pt", "headphones", "fone"), ("pt", "sunglasses", "juliet"),
    ("tr", "sneakers", "snikır"), ("tr", "headphones", "kulakçık"), ("tr", "sunglasses", "güneşlik"),
    ("pl", "sneakers", "adidasy"), ("pl", "headphones", "słuchawy"), ("pl", "sunglasses", "okularki"),
    ("id", "sneakers", "sepokat"), ("id", "headphones", "hedset"), ("id", "sunglasses", "kacmat"),
    ("en", "smartphone", "mobe"), ("de", "smartphone", "Smarti"), ("nl", "smartphone", "mobieltje"),
    ("es", "smartphone", "celu"), ("fr", "smartphone", "tel"), ("it", "smartphone", "telefonino"),
    ("pt", "smartphone", "cel"), ("tr", "smartphone", "telo"), ("pl", "smartphone", "komóra"),
    ("id", "smartphone", "hape"),
)

# Rough relative demand per category (seasonless); unlisted categories get 1.0.
CATEGORY_DEMAND: dict[str, float] = {
    "sneakers": 2.5, "running_shoes": 1.5, "t_shirt": 1.8, "jeans": 1.5, "smartphone": 2.0,
    "headphones": 1.8, "phone_case": 1.4, "dress": 1.4, "hoodie": 1.3, "sunglasses": 1.2,
    "charger": 0.8, "socks": 0.8, "blanket": 0.7, "dumbbells": 0.7, "shampoo": 0.9,
}

# Hour-of-day weights (UTC) for query traffic.
HOURLY_TRAFFIC: tuple[float, ...] = (
    0.6, 0.4, 0.3, 0.25, 0.25, 0.35, 0.6, 1.0, 1.3, 1.4, 1.4, 1.5,
    1.6, 1.5, 1.4, 1.4, 1.5, 1.7, 2.0, 2.2, 2.3, 2.0, 1.5, 1.0,
)


def split_forms(cell: str) -> list[str]:
    """``"a|b"`` -> ``["a", "b"]`` (primary first)."""
    return [w for w in cell.split("|") if w]


def lang_index(lang: str) -> int:
    return LANGUAGES.index(lang)
