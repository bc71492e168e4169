"""Lesson 1 in code: the five design patterns of multimodal models, and three ways to fuse.

Every example is a few dozen lines of torch on generated pictures (coloured shapes on a grey
background) and captions, so that it trains in seconds on a laptop CPU and a student can read
every line. The patterns follow the original tutorial (Q1):

1. shared representation learning: ``TinyCLIP`` pulls pictures and captions into one latent
   space with a contrastive loss;
2. interactive learning: ``CrossModalAttention`` lets each word look at image patches;
3. hierarchical models: ``TinyHierarchy`` goes from edges to colour regions to "what is here";
4. joint training: ``JointModel`` learns colour and shape with one trunk and one summed loss;
5. modality-specific modules: an image tower and a text tower joined by a small head, which is
   what ``IntermediateFusion`` is, and what InternVL2 is at full scale (InternViT, mlp1, InternLM2).

The fusion models (``EarlyFusion``, ``IntermediateFusion``, ``LateFusion``) answer "is there a
<colour> thing in the picture?": the answer needs both modalities at once, which is exactly
what late fusion cannot see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: The palette of the generated pictures (RGB in 0..1), far enough apart to tell apart under noise.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.16, 0.16), "green": (0.16, 0.67, 0.24), "blue": (0.16, 0.31, 0.86),
    "yellow": (0.92, 0.80, 0.16), "purple": (0.55, 0.24, 0.71), "cyan": (0.16, 0.78, 0.82),
}
SHAPE_NAMES = ("circle", "square", "triangle", "cross")
COLOUR_NAMES = tuple(PALETTE)
BACKGROUND = 0.5  # mid-grey, not one of the palette colours
TEMPLATES = ("a {c} {s}", "a photo of a {c} {s}", "the {s} is {c}", "{c} {s}", "there is a {c} {s}",
             "a picture of a {c} {s}")
VOCAB = tuple(sorted({w for t in TEMPLATES for w in t.format(c="", s="").split()} | set(COLOUR_NAMES) | set(SHAPE_NAMES)))
WORD_ID = {w: i for i, w in enumerate(VOCAB)}


# ---------------------------------------------------------------------------------------------
# Generated data
# ---------------------------------------------------------------------------------------------


def shape_mask(shape: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    """Which pixels of a ``size x size`` canvas a shape of radius ``r`` at (cx, cy) covers."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return np.maximum(abs(dx), abs(dy)) <= 0.8 * r
    if shape == "triangle":  # apex up
        return (dy <= 0.8 * r) & (abs(dx) <= 0.58 * (dy + r))
    if shape == "cross":
        return ((abs(dx) <= 0.3 * r) & (abs(dy) <= r)) | ((abs(dy) <= 0.3 * r) & (abs(dx) <= r))
    raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPE_NAMES)}")


def draw(objects: list[tuple[int, int]], size: int, rng: np.random.Generator) -> np.ndarray:
    """A [3, size, size] picture in 0..1 of up to four (colour index, shape index) objects on grey.

    Objects go into separate cells of a 2x2 layout (one object: anywhere), so they never hide
    one another; colour, size and position jitter so no two pictures are alike.
    """
    canvas = np.full((size, size, 3), BACKGROUND) + rng.normal(0, 0.03, (size, size, 3))
    cells = rng.permutation(4)
    for k, (colour, shape) in enumerate(objects):
        if len(objects) == 1:
            r = rng.uniform(0.25, 0.38) * size
            cx, cy = rng.uniform(r, size - r, 2)
        else:
            half = size / 2
            r = rng.uniform(0.28, 0.4) * half
            cx = (cells[k] % 2) * half + rng.uniform(r, half - r)
            cy = (cells[k] // 2) * half + rng.uniform(r, half - r)
        rgb = np.array(PALETTE[COLOUR_NAMES[colour]]) + rng.normal(0, 0.04, 3)
        canvas[shape_mask(SHAPE_NAMES[shape], size, cx, cy, r)] = rgb
    return np.clip(canvas, 0, 1).transpose(2, 0, 1)


def picture(objects: list[tuple[str, str]], size: int = 32, seed: int = 0) -> torch.Tensor:
    """A [3, size, size] picture of named objects, e.g. ``[("red", "circle"), ("blue", "square")]``."""
    indices = [(COLOUR_NAMES.index(colour), SHAPE_NAMES.index(shape)) for colour, shape in objects]
    return torch.tensor(draw(indices, size, np.random.default_rng(seed)), dtype=torch.float32)


def tokenize(text: str) -> list[int]:
    """Word ids in ``VOCAB`` (the captions only use those words)."""
    return [WORD_ID[w] for w in text.split()]


@dataclass
class CaptionedPictures:
    """One object per picture, with its colour, shape and a caption in words and ids."""

    images: torch.Tensor  # [n, 3, size, size] in 0..1
    colours: torch.Tensor  # [n] index into COLOUR_NAMES
    shapes: torch.Tensor  # [n] index into SHAPE_NAMES
    captions: list[str]
    token_ids: torch.Tensor  # [n, max_len], padded with -1

    @property
    def classes(self) -> torch.Tensor:
        """colour x shape as one number, 0..23: the concept a picture and its caption share."""
        return self.colours * len(SHAPE_NAMES) + self.shapes


def pad(rows: list[list[int]]) -> torch.Tensor:
    """Id lists of different lengths -> one [n, longest] tensor, padded with -1."""
    longest = max(len(r) for r in rows)
    return torch.tensor([r + [-1] * (longest - len(r)) for r in rows])


def captioned_pictures(n: int, seed: int = 0, size: int = 24) -> CaptionedPictures:
    """``n`` pictures of one coloured shape each, captioned from varied templates."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(len(PALETTE), size=n)
    shapes = rng.integers(len(SHAPE_NAMES), size=n)
    images = np.stack([draw([(c, s)], size, rng) for c, s in zip(colours, shapes)])
    captions = [TEMPLATES[rng.integers(len(TEMPLATES))].format(c=COLOUR_NAMES[c], s=SHAPE_NAMES[s])
                for c, s in zip(colours, shapes)]
    return CaptionedPictures(torch.tensor(images, dtype=torch.float32), torch.tensor(colours),
                             torch.tensor(shapes), captions, pad([tokenize(c) for c in captions]))


def class_captions() -> tuple[list[str], torch.Tensor]:
    """The plain caption "a <colour> <shape>" of every class, in class order (for retrieval)."""
    captions = [f"a {c} {s}" for c in COLOUR_NAMES for s in SHAPE_NAMES]
    return captions, pad([tokenize(c) for c in captions])


@dataclass
class ColourQuestions:
    """Pictures of two objects with a question "is there a <colour> thing?" and its answer."""

    images: torch.Tensor  # [n, 3, size, size]
    question: torch.Tensor  # [n] colour index asked about
    answer: torch.Tensor  # [n] 1.0 yes, 0.0 no


def colour_questions(n: int, seed: int = 0, size: int = 24) -> ColourQuestions:
    """Half the questions ask about a colour that is there, half about one that is not."""
    rng = np.random.default_rng(seed)
    images, questions, answers = [], [], []
    for _ in range(n):
        present = rng.choice(len(PALETTE), size=2, replace=False)
        objects = [(int(c), int(rng.integers(len(SHAPE_NAMES)))) for c in present]
        images.append(draw(objects, size, rng))
        yes = rng.random() < 0.5
        absent = [c for c in range(len(PALETTE)) if c not in present]
        questions.append(int(rng.choice(present if yes else absent)))
        answers.append(float(yes))
    return ColourQuestions(torch.tensor(np.stack(images), dtype=torch.float32), torch.tensor(questions),
                           torch.tensor(answers))


# ---------------------------------------------------------------------------------------------
# Small building blocks
# ---------------------------------------------------------------------------------------------


def conv_encoder(in_channels: int, width: int) -> nn.Sequential:
    """Two stride-2 convolutions: a picture [B, C, S, S] -> a feature map [B, width, S/4, S/4].

    Each output sees 7x7 pixels: a corner, a curve, a colour. Followed by a global max pool
    ("is this local pattern anywhere?") that is enough to tell the shapes and colours apart, and
    it learns in a few hundred steps where deeper stacks with average pooling need thousands.
    """
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())


class BagOfWords(nn.Module):
    """A caption -> the mean of its word embeddings (ids of -1 are padding)."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        mask = (token_ids >= 0).float()[..., None]
        vectors = self.embed(token_ids.clamp(min=0)) * mask
        return vectors.sum(1) / mask.sum(1).clamp(min=1)


# ---------------------------------------------------------------------------------------------
# Pattern 1: a shared latent space, learned contrastively (CLIP in miniature)
# ---------------------------------------------------------------------------------------------


class TinyCLIP(nn.Module):
    """An image encoder and a text encoder that map into the same ``dim``-dimensional sphere."""

    def __init__(self, dim: int = 32, width: int = 32) -> None:
        super().__init__()
        self.image_encoder = nn.Sequential(conv_encoder(3, width), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                                           nn.Linear(width, dim))
        self.text_encoder = nn.Sequential(BagOfWords(len(VOCAB), width), nn.ReLU(), nn.Linear(width, dim))
        # CLIP's learnable temperature, starting at 1/0.07
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_encoder(images), dim=-1)

    def encode_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_encoder(token_ids), dim=-1)


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: in a batch, picture i must pick caption i and caption i picture i.

    Pairs that happen to share a class are still counted as negatives, as in CLIP; with 24
    classes that only blurs the targets a little.
    """
    logits = log_scale.exp() * image_emb @ text_emb.T
    targets = torch.arange(len(logits))
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def train_clip(model: TinyCLIP, data: CaptionedPictures, steps: int = 300, batch_size: int = 128,
               lr: float = 3e-3, seed: int = 0) -> list[float]:
    """Adam on random batches; returns the loss of every step."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        batch = torch.randint(len(data.images), (batch_size,), generator=generator)
        loss = contrastive_loss(model.encode_image(data.images[batch]), model.encode_text(data.token_ids[batch]),
                                model.log_scale)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


@dataclass
class Alignment:
    """How well pictures and captions line up in the shared space (held-out pictures)."""

    matched: float  # mean cosine of a picture and the caption of its own class
    unmatched: float  # mean cosine of a picture and the captions of the other 23 classes
    retrieval: float  # fraction of pictures whose nearest class caption is their own

    @property
    def gap(self) -> float:
        """matched - unmatched: 0 when the space knows nothing, towards 1 when aligned."""
        return self.matched - self.unmatched


@torch.no_grad()
def alignment(model: TinyCLIP, data: CaptionedPictures) -> Alignment:
    _, class_ids = class_captions()
    similarity = model.encode_image(data.images) @ model.encode_text(class_ids).T  # [n, 24]
    own = F.one_hot(data.classes, similarity.shape[1]).bool()
    return Alignment(matched=similarity[own].mean().item(), unmatched=similarity[~own].mean().item(),
                     retrieval=(similarity.argmax(1) == data.classes).float().mean().item())


@torch.no_grad()
def embeddings_2d(model: TinyCLIP, data: CaptionedPictures) -> tuple[np.ndarray, np.ndarray]:
    """Picture and class-caption embeddings projected together onto their two main axes (PCA)."""
    _, class_ids = class_captions()
    images, texts = model.encode_image(data.images), model.encode_text(class_ids)
    both = torch.cat([images, texts])
    centred = both - both.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    flat = (centred @ v[:2].T).numpy()
    return flat[: len(images)], flat[len(images):]


@torch.no_grad()
def class_similarity(model: TinyCLIP, data: CaptionedPictures) -> np.ndarray:
    """[24, 24]: mean cosine of the pictures of class i with the caption of class j."""
    _, class_ids = class_captions()
    similarity = model.encode_image(data.images) @ model.encode_text(class_ids).T
    return np.stack([similarity[data.classes == k].mean(0).numpy() for k in range(similarity.shape[1])])


# ---------------------------------------------------------------------------------------------
# Pattern 2: interaction through cross-modal attention
# ---------------------------------------------------------------------------------------------


class CrossModalAttention(nn.Module):
    """One head of cross-attention: text tokens ask (queries), image patches answer (keys, values)."""

    def __init__(self, text_dim: int, image_dim: int, dim: int) -> None:
        super().__init__()
        self.q = nn.Linear(text_dim, dim, bias=False)
        self.k = nn.Linear(image_dim, dim, bias=False)
        self.v = nn.Linear(image_dim, dim, bias=False)

    def forward(self, text: torch.Tensor, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """text [B, T, text_dim], patches [B, P, image_dim] -> (outputs [B, T, dim], weights [B, T, P])."""
        scores = self.q(text) @ self.k(patches).transpose(1, 2) / math.sqrt(self.q.out_features)
        weights = scores.softmax(-1)
        return weights @ self.v(patches), weights


def colour_affinity(images: torch.Tensor, sharpness: float = 40.0) -> torch.Tensor:
    """[B, 3, H, W] -> [B, colours, H, W]: how close each pixel is to each palette colour (0..1)."""
    palette = torch.tensor(list(PALETTE.values()), dtype=images.dtype)[None, :, :, None, None]  # [1, K, 3, 1, 1]
    distance = ((images[:, None] - palette) ** 2).sum(2)
    return torch.exp(-sharpness * distance)


def attention_demo(image: torch.Tensor, words: list[str], patch: int = 4,
                   sharpness: float = 8.0) -> tuple[torch.Tensor, float]:
    """Which patches each colour word attends to, with projections set by hand so they are readable.

    A patch is described by its mean colour affinity (a hand-made "image encoder"); a word is a
    one-hot over the palette. With identity projections, ``q . k`` is simply "how much of my
    colour is in this patch", and the softmax turns that into where the word looks. A trained
    model learns such projections, in many heads at once. Returns the weights [words, H/p, W/p]
    and the share of the first word's attention that lands on patches holding its colour.
    """
    k = len(PALETTE)
    features = F.avg_pool2d(colour_affinity(image[None]), patch)  # [1, K, H/p, W/p]
    grid = features.shape[-2:]
    patches = features.flatten(2).transpose(1, 2)  # [1, P, K]
    text = torch.stack([F.one_hot(torch.tensor(COLOUR_NAMES.index(w)), k).float() for w in words])[None]
    attention = CrossModalAttention(k, k, k)
    with torch.no_grad():
        for layer in (attention.q, attention.k, attention.v):
            layer.weight.copy_(torch.eye(k))
        attention.q.weight.mul_(sharpness * math.sqrt(k))  # undo the 1/sqrt(dim) and sharpen
        _, weights = attention(text, patches)
    weights = weights[0].reshape(len(words), *grid)
    holds_colour = features[0, COLOUR_NAMES.index(words[0])] > 0.1
    return weights, weights[0][holds_colour].sum().item()


# ---------------------------------------------------------------------------------------------
# Pattern 3: a hierarchy, from edges to regions to meaning
# ---------------------------------------------------------------------------------------------


class TinyHierarchy(nn.Module):
    """Three levels with hand-set weights: edges (pixels), colour regions (coarse), words (global).

    Real vision encoders learn the same progression: early layers respond to edges and colours,
    later ones to parts and objects; InternVL2 hands the LLM the last layer's features.
    """

    def __init__(self, pool: int = 8) -> None:
        super().__init__()
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        self.edges = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            self.edges.weight.copy_(torch.stack([sobel, sobel.T])[:, None])
        self.edges.requires_grad_(False)  # set by hand, not learned
        self.regions = nn.AvgPool2d(pool)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        grey = images.mean(1, keepdim=True)
        gradients = self.edges(grey)
        level1 = gradients.pow(2).sum(1).sqrt()  # [B, H, W] edge strength
        level2 = self.regions(colour_affinity(images))  # [B, colours, H/pool, W/pool]
        level3 = level2.flatten(2).amax(-1)  # [B, colours]: is this colour anywhere?
        return {"edges": level1, "regions": level2, "present": level3}


# ---------------------------------------------------------------------------------------------
# Pattern 4: joint training of several tasks
# ---------------------------------------------------------------------------------------------


class JointModel(nn.Module):
    """One shared trunk, one head per task: colour (6 classes) and shape (4 classes)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.trunk = nn.Sequential(conv_encoder(3, width), nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.colour_head = nn.Linear(width, len(PALETTE))
        self.shape_head = nn.Linear(width, len(SHAPE_NAMES))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(images)
        return self.colour_head(features), self.shape_head(features)


def train_joint(model: JointModel, train: CaptionedPictures, test: CaptionedPictures, steps: int = 300,
                batch_size: int = 128, lr: float = 1e-2, every: int = 10, seed: int = 0) -> dict[str, list[float]]:
    """Both tasks in one loss (their sum), one optimiser; held-out accuracy every ``every`` steps."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history: dict[str, list[float]] = {"step": [], "colour loss": [], "shape loss": [],
                                       "colour accuracy": [], "shape accuracy": []}
    for step in range(1, steps + 1):
        model.train()
        batch = torch.randint(len(train.images), (batch_size,), generator=generator)
        colour_logits, shape_logits = model(train.images[batch])
        colour_loss = F.cross_entropy(colour_logits, train.colours[batch])
        shape_loss = F.cross_entropy(shape_logits, train.shapes[batch])
        optimizer.zero_grad()
        (colour_loss + shape_loss).backward()
        optimizer.step()
        if step % every == 0 or step == steps:
            model.eval()
            with torch.no_grad():
                colour_pred, shape_pred = (logits.argmax(1) for logits in model(test.images))
            history["step"].append(step)
            history["colour loss"].append(colour_loss.item())
            history["shape loss"].append(shape_loss.item())
            history["colour accuracy"].append((colour_pred == test.colours).float().mean().item())
            history["shape accuracy"].append((shape_pred == test.shapes).float().mean().item())
    return history


# ---------------------------------------------------------------------------------------------
# Early, intermediate and late fusion (and pattern 5: modality-specific modules)
# ---------------------------------------------------------------------------------------------


class EarlyFusion(nn.Module):
    """Fuse the inputs themselves: the question becomes extra planes of the picture.

    The question's one-hot colour code is painted onto every pixel as 6 more channels, so every
    layer, from the first convolution on, sees both modalities.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.joint = nn.Sequential(conv_encoder(3 + len(PALETTE), width), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                                   nn.Linear(width, 1))

    def forward(self, images: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        planes = F.one_hot(question, len(PALETTE)).float()[:, :, None, None].expand(-1, -1, *images.shape[-2:])
        return self.joint(torch.cat([images, planes], 1)).squeeze(1)


class IntermediateFusion(nn.Module):
    """Each modality has its own encoder; their features meet in the middle, then joint layers.

    This is also pattern 5: an image tower, a text tower and a head that joins them, the shape
    of InternVL2 (InternViT, InternLM2's embeddings, and layers that see both).
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.image_tower = conv_encoder(3, width)
        self.text_tower = nn.Sequential(nn.Embedding(len(PALETTE), width), nn.Linear(width, width), nn.ReLU())
        self.joint = nn.Sequential(nn.Conv2d(2 * width, width, 1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                                   nn.Linear(width, 1))

    def forward(self, images: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        features = self.image_tower(images)
        words = self.text_tower(question)[:, :, None, None].expand_as(features)
        return self.joint(torch.cat([features, words], 1)).squeeze(1)


class LateFusion(nn.Module):
    """Each modality decides alone; the decisions are added at the very end.

    The picture-only score cannot know which colour is asked and the question-only score
    cannot see the picture, so no sum of the two can answer: expect a coin toss.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.image_model = nn.Sequential(conv_encoder(3, width), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                                         nn.Linear(width, 1))
        self.text_model = nn.Sequential(nn.Embedding(len(PALETTE), width), nn.ReLU(), nn.Linear(width, 1))

    def forward(self, images: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        return (self.image_model(images) + self.text_model(question)).squeeze(1)


def train_fusion(model: nn.Module, train: ColourQuestions, test: ColourQuestions, steps: int = 300,
                 batch_size: int = 128, lr: float = 3e-3, every: int = 10, seed: int = 0) -> dict[str, list[float]]:
    """Binary cross-entropy on yes/no; held-out accuracy every ``every`` steps."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history: dict[str, list[float]] = {"step": [], "loss": [], "accuracy": []}
    for step in range(1, steps + 1):
        model.train()
        batch = torch.randint(len(train.images), (batch_size,), generator=generator)
        loss = F.binary_cross_entropy_with_logits(model(train.images[batch], train.question[batch]),
                                                  train.answer[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % every == 0 or step == steps:
            model.eval()
            with torch.no_grad():
                predicted = (model(test.images, test.question) > 0).float()
            history["step"].append(step)
            history["loss"].append(loss.item())
            history["accuracy"].append((predicted == test.answer).float().mean().item())
    return history
