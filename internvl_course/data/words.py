"""The kit's own bilingual text: food, tableware, colours, shapes, counts and course words.

Everything here was written for this kit. The tokenizer is trained on `corpus_sentences()` and
on `corpus_dialogues()` set in chat prompts, and the data generators can reuse the same word
lists, so a dish or a colour is spelled one way across the whole course. Generation is plain
iteration (no random numbers): the same code always gives the same sentences in the same
order, which keeps the tokenizer build reproducible.
"""

from __future__ import annotations

from typing import NamedTuple


class Dish(NamedTuple):
    """A dish and the facts the sentences and the food generator need about it."""

    zh: str
    en: str
    cuisine: str  # a key of CUISINES
    ingredients: tuple[str, ...]  # keys of INGREDIENTS, main one first
    flavour: str  # a key of FLAVOURS
    colour: str  # a key of COLOURS: what the dish mostly looks like
    method: str  # a key of METHODS


class Tableware(NamedTuple):
    """A thing on the table: its Chinese measure word, both English numbers and what it is made of."""

    zh: str
    measure: str
    en: str
    en_plural: str
    material: str  # a key of MATERIALS


# The eight great cuisines, plus two labels for dishes that belong to none of them.
CUISINES: dict[str, str] = {
    "川菜": "Sichuan", "粤菜": "Cantonese", "鲁菜": "Shandong", "苏菜": "Jiangsu",
    "浙菜": "Zhejiang", "闽菜": "Fujian", "湘菜": "Hunan", "徽菜": "Anhui",
    "京菜": "Beijing", "家常菜": "home-style",
}

INGREDIENTS: dict[str, str] = {
    "鸡肉": "chicken", "猪肉": "pork", "牛肉": "beef", "鸭肉": "duck", "鹅肉": "goose",
    "鱼": "fish", "虾": "shrimp", "蟹肉": "crab meat", "海参": "sea cucumber", "豆腐": "tofu",
    "鸡蛋": "egg", "西红柿": "tomato", "土豆": "potato", "茄子": "eggplant", "花生": "peanuts",
    "辣椒": "chili pepper", "花椒": "Sichuan pepper", "葱": "scallion", "姜": "ginger",
    "蒜": "garlic", "醋": "vinegar", "糖": "sugar", "酱油": "soy sauce",
    "豆瓣酱": "chili bean paste", "面条": "noodles", "面粉": "flour", "米饭": "rice",
    "木耳": "wood ear mushroom", "胡萝卜": "carrot", "青菜": "leafy greens", "蜂蜜": "honey",
    "茶叶": "tea leaves", "排骨": "spare ribs", "荸荠": "water chestnut", "蘑菇": "mushroom",
    "白菜": "napa cabbage", "黄瓜": "cucumber", "青椒": "green pepper",
}

FLAVOURS: dict[str, str] = {
    "麻辣": "numbing and spicy", "香辣": "hot and fragrant", "酸甜": "sweet and sour",
    "酸辣": "hot and sour", "咸鲜": "savoury", "清淡": "light", "鲜甜": "fresh and sweet",
    "咸甜": "salty and sweet", "酱香": "rich with soy sauce",
}

METHODS: dict[str, str] = {
    "炒": "stir-fried", "烧": "braised", "煮": "boiled", "蒸": "steamed", "炸": "deep-fried",
    "烤": "roasted", "炖": "stewed", "卤": "braised in spiced broth", "煎": "pan-fried",
    "凉拌": "dressed and served cold",
}

TEXTURES: dict[str, str] = {
    "酥脆": "crispy", "软嫩": "tender", "爽滑": "silky", "多汁": "juicy", "筋道": "chewy",
    "香浓": "rich",
}

COLOURS: dict[str, str] = {
    "红色": "red", "橙色": "orange", "黄色": "yellow", "绿色": "green", "蓝色": "blue",
    "紫色": "purple", "白色": "white", "黑色": "black", "棕色": "brown", "灰色": "grey",
    "粉色": "pink",
}

SHAPES: dict[str, str] = {
    "圆形": "circle", "正方形": "square", "三角形": "triangle", "长方形": "rectangle",
    "椭圆形": "oval", "星形": "star", "菱形": "diamond", "六边形": "hexagon",
}

SIZES: dict[str, str] = {"大": "big", "中等大小": "medium-sized", "小": "small"}

POSITIONS: dict[str, str] = {
    "左边": "on the left", "右边": "on the right", "上面": "at the top", "下面": "at the bottom",
    "中间": "in the middle", "左上角": "in the top left corner", "右下角": "in the bottom right corner",
}

MATERIALS: dict[str, str] = {
    "陶瓷": "porcelain", "木头": "wood", "竹子": "bamboo", "玻璃": "glass", "不锈钢": "stainless steel",
    "布": "cloth", "陶土": "clay",
}

MEALS: dict[str, str] = {"早餐": "breakfast", "午餐": "lunch", "晚餐": "dinner", "夜宵": "a late-night snack"}

# Counting one to ten: (Chinese before a measure word, English). Two is 两 before a measure word.
NUMBERS: tuple[tuple[str, str], ...] = (
    ("一", "one"), ("两", "two"), ("三", "three"), ("四", "four"), ("五", "five"),
    ("六", "six"), ("七", "seven"), ("八", "eight"), ("九", "nine"), ("十", "ten"),
)

TABLEWARE: tuple[Tableware, ...] = (
    Tableware("盘子", "个", "plate", "plates", "陶瓷"),
    Tableware("碗", "个", "bowl", "bowls", "陶瓷"),
    Tableware("筷子", "双", "pair of chopsticks", "pairs of chopsticks", "竹子"),
    Tableware("勺子", "把", "spoon", "spoons", "不锈钢"),
    Tableware("杯子", "个", "cup", "cups", "玻璃"),
    Tableware("茶壶", "把", "teapot", "teapots", "陶瓷"),
    Tableware("蒸笼", "个", "bamboo steamer", "bamboo steamers", "竹子"),
    Tableware("砂锅", "个", "clay pot", "clay pots", "陶土"),
    Tableware("托盘", "个", "tray", "trays", "木头"),
    Tableware("叉子", "把", "fork", "forks", "不锈钢"),
    Tableware("餐巾", "张", "napkin", "napkins", "布"),
)

# name | English | cuisine | ingredients (main first) | flavour | colour | method
_DISH_TABLE = """
宫保鸡丁|kung pao chicken|川菜|鸡肉 花生 辣椒|香辣|红色|炒
麻婆豆腐|mapo tofu|川菜|豆腐 牛肉 花椒|麻辣|红色|烧
鱼香肉丝|fish-fragrant shredded pork|川菜|猪肉 木耳 胡萝卜|酸甜|棕色|炒
回锅肉|twice-cooked pork|川菜|猪肉 青椒 豆瓣酱|香辣|棕色|炒
水煮鱼|Sichuan boiled fish|川菜|鱼 辣椒 花椒|麻辣|红色|煮
担担面|dan dan noodles|川菜|面条 猪肉 花生|麻辣|红色|煮
夫妻肺片|beef slices in chili oil|川菜|牛肉 辣椒 花生|麻辣|红色|凉拌
鱼香茄子|fish-fragrant eggplant|川菜|茄子 蒜 豆瓣酱|酸甜|紫色|烧
叉烧|char siu pork|粤菜|猪肉 蜂蜜 酱油|咸甜|红色|烤
白切鸡|white cut chicken|粤菜|鸡肉 姜 葱|咸鲜|白色|煮
虾饺|shrimp dumplings|粤菜|虾 面粉|鲜甜|白色|蒸
烧鹅|roast goose|粤菜|鹅肉 酱油|咸鲜|棕色|烤
糖醋鲤鱼|sweet and sour carp|鲁菜|鱼 糖 醋|酸甜|橙色|炸
葱烧海参|sea cucumber braised with scallion|鲁菜|海参 葱|咸鲜|黑色|烧
德州扒鸡|Dezhou braised chicken|鲁菜|鸡肉 酱油|酱香|棕色|卤
小笼包|soup dumplings|苏菜|猪肉 面粉|咸鲜|白色|蒸
松鼠鳜鱼|squirrel-shaped mandarin fish|苏菜|鱼 西红柿 糖|酸甜|橙色|炸
狮子头|lion's head meatballs|苏菜|猪肉 蟹肉 白菜|咸鲜|棕色|炖
盐水鸭|salted duck|苏菜|鸭肉 姜|咸鲜|白色|卤
西湖醋鱼|West Lake fish in vinegar sauce|浙菜|鱼 醋 糖|酸甜|棕色|煮
东坡肉|Dongpo pork|浙菜|猪肉 酱油 糖|咸甜|红色|炖
龙井虾仁|shrimp with Longjing tea|浙菜|虾 茶叶|清淡|白色|炒
佛跳墙|Buddha jumps over the wall|闽菜|海参 鸡肉 蘑菇|咸鲜|棕色|炖
荔枝肉|lychee pork|闽菜|猪肉 荸荠 醋|酸甜|红色|炸
沙茶面|satay noodles|闽菜|面条 虾 豆腐|香辣|棕色|煮
剁椒鱼头|fish head with chopped chili|湘菜|鱼 辣椒 蒜|香辣|红色|蒸
小炒肉|Hunan stir-fried pork|湘菜|猪肉 青椒 蒜|香辣|绿色|炒
臭鳜鱼|fermented mandarin fish|徽菜|鱼 姜 蒜|咸鲜|棕色|烧
毛豆腐|hairy tofu|徽菜|豆腐 辣椒|香辣|黄色|煎
北京烤鸭|Peking roast duck|京菜|鸭肉 葱 黄瓜|咸甜|棕色|烤
红烧肉|red-braised pork belly|家常菜|猪肉 酱油 糖|咸甜|红色|烧
糖醋排骨|sweet and sour spare ribs|家常菜|排骨 糖 醋|酸甜|棕色|炸
西红柿炒鸡蛋|stir-fried tomato and egg|家常菜|西红柿 鸡蛋|酸甜|红色|炒
饺子|dumplings|家常菜|面粉 猪肉 白菜|咸鲜|白色|煮
酸辣土豆丝|hot and sour shredded potato|家常菜|土豆 辣椒 醋|酸辣|黄色|炒
蛋炒饭|egg fried rice|家常菜|米饭 鸡蛋 葱|咸鲜|黄色|炒
"""


def _parse_dishes(table: str) -> tuple[Dish, ...]:
    dishes = []
    for row in table.strip().splitlines():
        zh, en, cuisine, ingredients, flavour, colour, method = row.split("|")
        dishes.append(Dish(zh, en, cuisine, tuple(ingredients.split()), flavour, colour, method))
    return tuple(dishes)


DISHES: tuple[Dish, ...] = _parse_dishes(_DISH_TABLE)

# What the lessons talk about, in both languages.
COURSE_TERMS: dict[str, str] = {
    "图片": "image", "图块": "tile", "缩略图": "thumbnail", "词元": "token", "模型": "model",
    "问题": "question", "答案": "answer", "选项": "option", "视觉编码器": "vision encoder",
    "语言模型": "language model", "投影层": "projector", "微调": "fine-tuning", "训练": "training",
    "推理": "inference", "对话": "conversation", "提示词": "prompt", "分词器": "tokenizer",
    "数据集": "dataset", "损失": "loss", "学习率": "learning rate", "批大小": "batch size",
    "显存": "GPU memory", "权重": "weights", "像素": "pixel", "分辨率": "resolution",
    "注意力": "attention", "多模态": "multimodal", "大模型": "large model", "部署": "deployment",
    "系统提示": "system prompt", "检查点": "checkpoint", "系统": "system", "用户": "user",
    # the words of InternVL2's default system message
    "上海": "Shanghai", "人工智能": "artificial intelligence", "实验室": "laboratory", "联合": "together with",
    "商汤科技": "SenseTime", "开发": "develop", "书生": "Shusheng, the Chinese name of InternLM", "英文名": "English name",
    "有用无害": "helpful and harmless", "助手": "assistant",
}

# Hand-written lines about the course itself; the numbers are InternVL2-2B's (docs/design.md, "InternVL2").
COURSE_LINES: tuple[str, ...] = (
    "InternVL2 由视觉编码器、投影层和语言模型三部分组成。",
    "InternVL2 is made of a vision encoder, a projector and a language model.",
    "每个 448 像素的图块会变成 256 个图像词元。",
    "Each 448-pixel tile becomes 256 image tokens.",
    "图片先按宽高比切成图块，再加上一张缩略图。",
    "The image is cut into tiles by its aspect ratio, and a thumbnail is added.",
    "Pixel shuffle turns a 32 x 32 grid of patches into 16 x 16 tokens.",
    "我们用 XTuner 做 LoRA 微调，用 LMDeploy 部署模型。",
    "We fine-tune with XTuner and LoRA, then serve the model with LMDeploy.",
    "微调时只训练投影层和 LoRA 权重，视觉编码器保持冻结。",
    "During fine-tuning only the projector and the LoRA weights are trained.",
    "学习率太大时损失会震荡，太小时模型学得很慢。",
    "If the learning rate is too high the loss jumps around; too low and the model learns slowly.",
    "请看图片，然后回答问题。",
    "Look at the image, then answer the question.",
    "请用一句话描述这张图片。",
    "Describe this image in one sentence.",
    "这张图片里有什么？",
    "What is in this picture?",
    "分词器把文字切成词元，模型只认识词元的编号。",
    "The tokenizer cuts text into tokens; the model only sees their ids.",
    "检查点保存在 work_dirs 目录下。",
    "Checkpoints are saved under work_dirs.",
    "显存不够时，可以减小批大小或者图块的最大数量。",
    "When GPU memory runs out, lower the batch size or the maximum number of tiles.",
)

_LETTERS = "ABCD"


def _count_en(n: int, singular: str, plural: str) -> str:
    return f"{NUMBERS[n - 1][1]} {singular if n == 1 else plural}"


def _be(n: int) -> str:
    return "is" if n == 1 else "are"


def _dish_lines(index: int, dish: Dish) -> tuple[list[str], list[tuple[str, str]]]:
    """Statements about one dish, and questions about it with their answers.

    The multiple-choice answer moves round A-D from one dish to the next.
    """
    cuisine_en = CUISINES[dish.cuisine]
    main, others = dish.ingredients[0], dish.ingredients[1:] or dish.ingredients
    others_en = " and ".join(INGREDIENTS[i] for i in others)
    capital_en = dish.en[0].upper() + dish.en[1:]
    ware = TABLEWARE[index % 2]  # a plate or a bowl
    colour, colour_en = list(COLOURS.items())[(index * 5) % len(COLOURS)]
    texture, texture_en = list(TEXTURES.items())[index % len(TEXTURES)]
    meal, meal_en = list(MEALS.items())[index % len(MEALS)]
    choices = [DISHES[(index + step) % len(DISHES)] for step in (0, 7, 13, 29)]
    answer = index % 4
    choices[0], choices[answer] = choices[answer], choices[0]
    letter = _LETTERS[answer]
    spicy = "辣" in dish.flavour
    options_zh = " ".join(f"{_LETTERS[k]}. {c.zh}" for k, c in enumerate(choices))
    options_en = " ".join(f"{_LETTERS[k]}. {c.en}" for k, c in enumerate(choices))
    statements = [
        f"这是一道{dish.cuisine}，名叫{dish.zh}。",
        f"This is {dish.en}, a {cuisine_en} dish.",
        f"图中的菜是{dish.zh}。",
        f"The dish in the image is {dish.en}.",
        f"{dish.zh}的主要食材是{main}，还有{'、'.join(others)}。",
        f"The main ingredient of {dish.en} is {INGREDIENTS[main]}, with {others_en}.",
        f"{dish.zh}是{dish.method}出来的，口味{dish.flavour}，颜色是{dish.colour}。",
        f"{capital_en} is {METHODS[dish.method]}, tastes {FLAVOURS[dish.flavour]} "
        f"and looks {COLOURS[dish.colour]}.",
        f"一个{colour}的{ware.zh}里装着{dish.zh}，旁边放着一双筷子。",
        f"A {colour_en} {ware.en} holds {dish.en}, with a pair of chopsticks beside it.",
        f"{dish.zh}吃起来很{texture}，很适合当{meal}。",
        f"{capital_en} is {texture_en}, a good choice for {meal_en}.",
        f"{dish.zh}是{dish.cuisine}里的一道名菜。",
        f"{dish.zh} ({dish.en}) comes from {cuisine_en} cuisine.",
    ]
    dialogues = [
        (f"图中的菜是什么？选项：{options_zh}", f"答案：{letter}，图中的菜是{dish.zh}"),
        (f"Which dish is shown in the image? Options: {options_en}", f"Answer: {letter}, the dish is {dish.en}."),
        (f"{ware.zh}是什么颜色的？", f"{ware.zh}是{colour}的。"),
        (f"What colour is the {ware.en}?", f"The {ware.en} is {colour_en}."),
        ("这道菜辣吗？", f"{'辣' if spicy else '不辣'}，口味{dish.flavour}。"),
        ("Is this dish spicy?", f"{'Yes' if spicy else 'No'}, it is {FLAVOURS[dish.flavour]}."),
    ]
    return statements, dialogues


def _scene_lines() -> tuple[list[str], list[tuple[str, str]]]:
    """Counted, coloured, placed shapes and tableware: what the generic image-text data describes."""
    statements: list[str] = []
    dialogues: list[tuple[str, str]] = []
    colours = list(COLOURS.items())
    sizes = list(SIZES.items())
    positions = list(POSITIONS.items())
    for s, (shape, shape_en) in enumerate(SHAPES.items()):
        for c, (colour, colour_en) in enumerate(colours):
            n = (s * 3 + c) % len(NUMBERS) + 1
            size, size_en = sizes[(s + 2 * c) % len(sizes)]
            place, place_en = positions[(s + c) % len(positions)]
            thing = f"{colour_en} {shape_en}"
            statements += [
                f"图中有{NUMBERS[n - 1][0]}个{colour}的{shape}。",
                f"There {_be(n)} {_count_en(n, thing, thing + 's')} in the image.",
                f"{place}有一个{size}的{colour}{shape}。",
                f"A {size_en} {thing} is {place_en}.",
            ]
            dialogues += [
                (f"图中有几个{shape}？", f"答案是{NUMBERS[n - 1][0]}个。"),
                (f"How many {shape_en}s are there?", f"There {_be(n)} {NUMBERS[n - 1][1]}."),
            ]
    for t, ware in enumerate(TABLEWARE):
        for n in range(1, len(NUMBERS) + 1):
            colour, colour_en = colours[(t + n) % len(colours)]
            things = _count_en(n, f"{colour_en} {ware.en}", f"{colour_en} {ware.en_plural}")
            statements += [
                f"桌上有{NUMBERS[n - 1][0]}{ware.measure}{colour}的{ware.zh}。",
                f"There {_be(n)} {things} on the table.",
            ]
        statements += [f"这个{ware.zh}是{ware.material}做的。", f"This {ware.en} is made of {MATERIALS[ware.material]}."]
    return statements, dialogues


def _glossary_sentences() -> list[str]:
    """One line per word-list entry, so every listed word is also seen on its own."""
    tables = (INGREDIENTS, FLAVOURS, METHODS, TEXTURES, COLOURS, SHAPES, SIZES, POSITIONS,
              MATERIALS, MEALS, CUISINES, COURSE_TERMS)
    lines = [f"{zh}：{en}" for table in tables for zh, en in table.items()]
    lines += [f"{ware.zh}：{ware.en}" for ware in TABLEWARE]
    lines += [f"{zh} {n}：{en}" for n, (zh, en) in enumerate(NUMBERS, start=1)]
    return lines


def corpus_dialogues() -> list[tuple[str, str]]:
    """(question, answer) pairs about an image of a dish or a scene, in a fixed order."""
    dialogues: list[tuple[str, str]] = []
    for index, dish in enumerate(DISHES):
        dialogues += _dish_lines(index, dish)[1]
    return dialogues + _scene_lines()[1]


def corpus_sentences() -> list[str]:
    """All corpus lines, in a fixed order: dishes, scenes, questions and answers, glossary, course."""
    lines: list[str] = []
    for index, dish in enumerate(DISHES):
        lines += _dish_lines(index, dish)[0]
    lines += _scene_lines()[0]
    lines += [line for dialogue in corpus_dialogues() for line in dialogue]
    lines += _glossary_sentences()
    lines += COURSE_LINES
    return lines
