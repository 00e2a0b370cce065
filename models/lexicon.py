"""A small hand-written seed lexicon for the cold start in Spanish, Portuguese, German, French,
Chinese and Japanese.

Written for repmon (our own words, no source copied). It only has to carry the first minutes of
a language: the per-language River model learns the domain from review stars and takes over (see
:mod:`models.sentiment`). English uses VADER instead.

Why not a packaged lexicon: the one multilingual option on PyPI that installs here (asent's
Chen & Skiena 2014 lists) is binary, machine-propagated and noisy for reviews ("como", "gran",
"general" are positive), and pulls in matplotlib; a short, reviewed list does better as a prior.

Format: ``word: valence`` on VADER's scale (-4..4). A key ending in ``*`` is a stem and matches
any word starting with it (``excelent*`` covers excelente, excelentes, excellent, excellente).
Matching is on lower-case text with accents removed, so ``péssimo`` and ``pessimo`` are one key.
Extend by adding words; keep them unambiguous in a review or a complaint.
"""

from __future__ import annotations

import unicodedata

__all__ = [
    "CJK",
    "CJK_INTENSIFIERS",
    "CJK_NEGATION",
    "CJK_NEGATION_GLUE",
    "CJK_NEGATORS",
    "INTENSIFIERS",
    "NEGATORS",
    "SEED",
    "strip_accents",
]

_COMMON: dict[str, float] = {
    # shared across the Romance languages (and loans seen in German reviews)
    "excelent*": 3.0,
    "perfect*": 3.0,
    "perfeit*": 3.0,
    "parfait*": 3.0,
    "fantastic*": 3.0,
    "fantasti*": 3.0,
    "horribl*": -3.0,
    "horrivel": -3.0,
    "horriveis": -3.0,
    "terribl*": -3.0,
    "terrivel": -3.0,
    "desastr*": -3.0,
    "catastrof*": -3.0,
    "katastroph*": -3.0,
    "super": 2.0,
    "top": 1.5,
    "ok": 0.5,
}

SEED: dict[str, dict[str, float]] = {
    "es": {
        **_COMMON,
        "bueno": 2.0,
        "buena": 2.0,
        "buenos": 2.0,
        "buenas": 2.0,
        "bien": 1.5,
        "genial": 3.0,
        "maravill*": 3.0,
        "encant*": 2.5,
        "me gusta": 2.0,
        "recomiend*": 2.0,
        "recomend*": 2.0,
        "rapid*": 1.5,
        "puntual*": 1.5,
        "amable*": 2.0,
        "gracias": 1.5,
        "feliz": 2.5,
        "satisfech*": 2.0,
        "mejor": 2.0,
        "increible*": 2.5,
        "comod*": 1.5,
        "malo": -2.5,
        "mala": -2.5,
        "malos": -2.5,
        "malas": -2.5,
        "mal": -2.0,
        "pesim*": -3.0,
        "fatal": -3.0,
        "peor": -2.5,
        "lent*": -1.5,
        "tarde": -1.0,
        "retras*": -2.0,
        "cancelad*": -2.0,
        "perdid*": -2.0,
        "rot*": -2.0,
        "defectuos*": -2.5,
        "estafa*": -3.5,
        "fraude": -3.5,
        "roba*": -3.0,
        "decepcion*": -2.5,
        "queja*": -2.0,
        "reembolso": -1.0,
        "nunca": -1.0,
        "grosero*": -2.5,
        "sucio*": -2.0,
        "caro": -1.0,
        "odio": -3.0,
        "verguenza": -2.5,
        "problema*": -1.5,
        "no funciona": -2.5,
    },
    "pt": {
        **_COMMON,
        "bom": 2.0,
        "boa": 2.0,
        "bons": 2.0,
        "boas": 2.0,
        "bem": 1.5,
        "otim*": 3.0,
        "maravilh*": 3.0,
        "adorei": 3.0,
        "amei": 3.0,
        "gostei": 2.0,
        "recomend*": 2.0,
        "rapid*": 1.5,
        "antes do prazo": 2.5,
        "no prazo": 1.5,
        "pontual*": 1.5,
        "parabens": 2.5,
        "obrigad*": 1.5,
        "satisfeit*": 2.0,
        "tudo certo": 2.0,
        "melhor": 2.0,
        "lind*": 2.0,
        "confortavel": 1.5,
        "ruim": -2.5,
        "ruins": -2.5,
        "pessim*": -3.0,
        "pior": -2.5,
        "mal": -2.0,
        "lent*": -1.5,
        "atras*": -2.0,
        "cancelad*": -2.0,
        "nao recebi": -3.0,
        "nao chegou": -3.0,
        "ainda nao": -1.5,
        "quebrad*": -2.5,
        "defeito*": -2.5,
        "errad*": -2.0,
        "diferente": -1.0,
        "faltando": -2.0,
        "golpe": -3.5,
        "fraude": -3.5,
        "enganad*": -3.0,
        "decepcion*": -2.5,
        "reclama*": -2.0,
        "devolu*": -1.5,
        "reembolso": -1.0,
        "nunca": -1.0,
        "problema*": -1.5,
        "caro": -1.0,
        "absurdo": -2.5,
        "descaso": -3.0,
        "vergonha": -2.5,
    },
    "de": {
        "gut": 2.0,
        "gute*": 2.0,
        "super": 2.0,
        "toll*": 2.5,
        "prima": 2.0,
        "klasse": 2.0,
        "hervorragend*": 3.0,
        "ausgezeichnet*": 3.0,
        "perfekt*": 3.0,
        "wunderbar*": 3.0,
        "empfehl*": 2.0,
        "zufrieden*": 2.0,
        "schnell*": 1.5,
        "punktlich*": 1.5,
        "freundlich*": 2.0,
        "danke": 1.5,
        "bestens": 2.5,
        "besser": 1.5,
        "beste*": 2.5,
        "liebe": 2.0,
        "bequem*": 1.5,
        "schlecht*": -2.5,
        "schlimm*": -2.5,
        "furchtbar*": -3.0,
        "schrecklich*": -3.0,
        "mies*": -2.5,
        "enttausch*": -2.5,
        "kaputt*": -2.5,
        "defekt*": -2.5,
        "verspat*": -2.0,
        "annulliert*": -2.0,
        "storniert*": -1.5,
        "verloren*": -2.0,
        "betrug*": -3.5,
        "abzocke": -3.5,
        "unfreundlich*": -2.5,
        "langsam*": -1.5,
        "teuer*": -1.0,
        "beschwerde*": -2.0,
        "argerlich*": -2.5,
        "arger": -2.0,
        "nie wieder": -3.0,
        "leider": -1.5,
        "mangelhaft*": -2.5,
        "problem*": -1.5,
        "funktioniert nicht": -2.5,
        "schade": -1.5,
        "nie": -1.0,
    },
    "fr": {
        **_COMMON,
        "bon": 2.0,
        "bonne": 2.0,
        "bons": 2.0,
        "bonnes": 2.0,
        "bien": 1.5,
        "genial*": 3.0,
        "merveill*": 3.0,
        "formidable*": 3.0,
        "adore": 3.0,
        "j'adore": 3.0,
        "recommand*": 2.0,
        "rapide*": 1.5,
        "ponctuel*": 1.5,
        "aimable*": 2.0,
        "sympa*": 2.0,
        "merci": 1.5,
        "content*": 2.0,
        "satisfait*": 2.0,
        "meilleur*": 2.0,
        "confortable*": 1.5,
        "mauvais*": -2.5,
        "nul": -3.0,
        "nulle": -3.0,
        "pire": -2.5,
        "lent*": -1.5,
        "retard*": -2.0,
        "annule*": -2.0,
        "perdu*": -2.0,
        "casse*": -2.0,
        "defectueu*": -2.5,
        "arnaque*": -3.5,
        "escroc*": -3.5,
        "decev*": -2.5,
        "decu*": -2.5,
        "plainte*": -2.0,
        "rembourse*": -1.0,
        "jamais": -1.0,
        "impoli*": -2.5,
        "sale": -1.5,
        "cher": -1.0,
        "honte*": -2.5,
        "inadmissible*": -3.0,
        "inacceptable*": -3.0,
        "probleme*": -1.5,
        "ne fonctionne pas": -2.5,
    },
}

#: words that flip the valence of the next three words ("no es bueno", "nicht gut", "pas bon")
NEGATORS: dict[str, frozenset[str]] = {
    "es": frozenset({"no", "nunca", "jamas", "ni", "sin", "tampoco"}),
    "pt": frozenset({"nao", "nunca", "jamais", "nem", "sem"}),
    "de": frozenset({"nicht", "kein", "keine", "keinen", "keiner", "nie", "niemals", "ohne"}),
    "fr": frozenset({"pas", "jamais", "ni", "sans", "aucun", "aucune"}),
}

#: words that strengthen the next word ("muy bueno", "sehr gut", "très bon")
INTENSIFIERS: dict[str, frozenset[str]] = {
    "es": frozenset({"muy", "super", "tan", "bastante", "demasiado", "totalmente"}),
    "pt": frozenset({"muito", "muita", "super", "tao", "bastante", "demais", "totalmente"}),
    "de": frozenset({"sehr", "total", "extrem", "echt", "wirklich", "absolut", "ganz"}),
    "fr": frozenset({"tres", "trop", "vraiment", "super", "tellement", "totalement"}),
}


def strip_accents(s: str) -> str:
    """Lower case without diacritics (``Péssimo`` -> ``pessimo``, ``Ärger`` -> ``arger``)."""
    return "".join(c for c in unicodedata.normalize("NFKD", s.lower()) if not unicodedata.combining(c))


# -- Chinese and Japanese -------------------------------------------------------------------------
# Written for repmon like the lists above. Neither language puts spaces between words, so a term
# is found wherever it occurs in the text, the longest term first at each position: "不错" (not
# bad: good) is one term and its "错" is not read again, "差不多" (about the same) is neutral and
# hides its "差" (poor). Japanese terms are stems where the word conjugates ("美味し" finds
# 美味しい, 美味しく, 美味しかった), so that the negation after them can be seen (:data:`CJK_NEGATION`).

CJK: dict[str, dict[str, float]] = {
    "zh": {
        # positive (simplified, then traditional where it differs)
        "好评": 2.5, "很好": 2.5, "非常好": 3.0, "好用": 2.0, "好吃": 2.5, "好看": 2.0, "不错": 2.0,
        "满意": 2.0, "滿意": 2.0, "喜欢": 2.0, "喜歡": 2.0, "喜爱": 2.0, "推荐": 2.0, "推薦": 2.0,
        "值得": 1.5, "优秀": 3.0, "優秀": 3.0, "完美": 3.0, "棒": 2.5, "赞": 2.0, "讚": 2.0, "超值": 2.5,
        "实惠": 1.5, "實惠": 1.5, "划算": 1.5, "舒服": 2.0, "舒适": 2.0, "舒適": 2.0, "漂亮": 2.0,
        "精致": 2.0, "物美价廉": 3.0, "性价比高": 2.5, "方便": 1.5, "清晰": 1.5, "流畅": 1.5,
        "流暢": 1.5, "耐用": 1.5, "感谢": 1.5, "感謝": 1.5, "谢谢": 1.0, "謝謝": 1.0, "开心": 2.0,
        "開心": 2.0, "惊喜": 2.5, "驚喜": 2.5, "正品": 1.5, "给力": 2.5, "靠谱": 2.0, "放心": 1.5,
        "热情": 1.5, "熱情": 1.5, "耐心": 1.5, "准时": 1.5, "準時": 1.5, "很快": 1.0, "速度快": 1.5,
        "没问题": 1.0, "沒問題": 1.0, "还行": 0.5, "還行": 0.5, "好": 1.5,
        # neutral forms that hold a scored character
        "差不多": 0.0, "好像": 0.0, "好几": 0.0, "好幾": 0.0, "只好": 0.0, "差价": 0.0, "差價": 0.0,
        "快递": 0.0, "快遞": 0.0, "好多": 0.0, "好久": 0.0, "好不容易": 0.0, "不好意思": 0.0,
        # negative
        "差评": -3.0, "差評": -3.0, "很差": -3.0, "太差": -3.0, "差": -2.0, "垃圾": -3.0, "失望": -2.5,
        "后悔": -2.5, "後悔": -2.5, "退货": -2.0, "退貨": -2.0, "退款": -1.5, "投诉": -2.5,
        "投訴": -2.5, "骗": -3.0, "騙": -3.0, "假货": -3.0, "假貨": -3.0, "坏了": -2.5, "壞了": -2.5,
        "坏": -2.0, "壞": -2.0, "破损": -2.0, "破損": -2.0, "烂": -2.5, "爛": -2.5, "很慢": -2.0,
        "太慢": -2.0, "难用": -2.5, "難用": -2.5, "难吃": -2.5, "難吃": -2.5, "难看": -2.0,
        "難看": -2.0, "不好": -2.0, "不行": -2.0, "不满": -2.5, "不滿": -2.5, "不值": -2.0,
        "故障": -2.0, "卡顿": -1.5, "卡頓": -1.5, "噪音": -1.5, "太贵": -2.0, "太貴": -2.0,
        "糟糕": -3.0, "恶心": -3.0, "噁心": -3.0, "生气": -2.5, "生氣": -2.5, "愤怒": -3.0,
        "憤怒": -3.0, "无语": -2.0, "無語": -2.0, "坑": -2.0, "劣质": -3.0, "劣質": -3.0, "敷衍": -2.0,
        "延误": -2.0, "延誤": -2.0, "丢失": -2.0, "丟失": -2.0, "问题": -1.0, "問題": -1.0,
        "麻烦": -1.5, "麻煩": -1.5, "慢": -1.0, "贵": -1.0, "貴": -1.0, "一般": -0.5,
    },
    "ja": {
        # positive
        "良い": 2.0, "よい": 2.0, "良かっ": 2.0, "よかっ": 2.0, "良く": 1.5, "いい": 1.5, "最高": 3.0,
        "素晴らし": 3.0, "すばらし": 3.0, "満足": 2.0, "気に入": 2.0, "おすすめ": 2.0, "お勧め": 2.0,
        "オススメ": 2.0, "便利": 1.5, "快適": 2.0, "美味し": 2.5, "おいし": 2.5, "嬉し": 2.0,
        "うれし": 2.0, "楽し": 2.0, "好き": 2.0, "綺麗": 2.0, "きれい": 2.0, "丁寧": 2.0, "親切": 2.0,
        "安心": 1.5, "早く届": 1.5, "使いやす": 2.0, "ありがとう": 1.5, "感謝": 2.0, "完璧": 3.0,
        "優秀": 2.5, "素敵": 2.5, "可愛": 2.0, "かわい": 2.0, "お得": 1.5, "定刻": 1.0, "助か": 1.5,
        # neutral forms that hold a scored word
        "どうでもいい": 0.0, "良ければ": 0.0, "よければ": 0.0, "いいえ": 0.0,
        # negative
        "悪い": -2.0, "悪かっ": -2.0, "悪く": -1.5, "最悪": -3.0, "最低": -3.0, "ひど": -2.5,
        "酷い": -2.5, "残念": -2.0, "不満": -2.0, "不良": -2.5, "壊れ": -2.5, "故障": -2.0,
        "返品": -2.0, "返金": -1.5, "失望": -2.5, "がっかり": -2.5, "使いにく": -2.0, "遅い": -1.5,
        "遅延": -2.0, "届かない": -2.5, "届かず": -2.5, "まずい": -2.5, "不味": -2.5, "腹が立": -2.5,
        "詐欺": -3.0, "偽物": -3.0, "ゴミ": -3.0, "問題": -1.0, "不具合": -2.0, "うるさ": -1.5,
        "汚": -2.0, "不便": -1.5, "二度と": -2.0, "期待外れ": -2.5, "微妙": -1.0, "イマイチ": -1.5,
        "いまいち": -1.5, "欠航": -2.0, "怒": -2.0, "高すぎ": -1.5, "不親切": -2.5, "不安": -1.5,
        "いい加減": -1.5, "いいかげん": -1.5,
    },
}  # fmt: skip

#: Chinese negators in the few characters before a term ("不是很好", "没有推荐"); a term that is
#: itself negated ("不好", "没问题") is one term and is not flipped again
CJK_NEGATORS: dict[str, frozenset[str]] = {
    "zh": frozenset("不没沒无無别別未非"),
    "ja": frozenset(),
}
#: Japanese negation follows its word: what may come between the term and the negation
#: ("良くない", "満足していない", "美味しくなかった", "便利ではありません"), then the negation
CJK_NEGATION_GLUE = ("できて", "して", "でき", "し", "くは", "く", "では", "じゃ", "には", "に", "は", "で")
CJK_NEGATION = ("ない", "なかっ", "なく", "ません", "ありません", "無い", "ず")
#: words that strengthen the term after them ("很满意", "とても親切")
CJK_INTENSIFIERS: dict[str, tuple[str, ...]] = {
    "zh": ("非常", "特别", "特別", "十分", "很", "太", "超", "真", "极", "極", "最"),
    "ja": ("とても", "すごく", "凄く", "本当に", "ほんとに", "非常に", "めっちゃ", "かなり", "大変", "超"),
}
