"""Distillation losses, one function per term, and `DistillLoss`, which weighs them into a dict.

Every term works on L2-normalised embeddings: `s_img`, `t_img` [B, D] (student, teacher), `s_cap`, `t_cap`
[C, D], and identities `pid` [B] of the images and `cap_pid` [C] of the captions (C = B and cap_pid = pid,
caption b describing image b, unless a batch brings several captions per image). Names are the ones the
training log prints (README.md, "Losses"):

- `dist_img`, `dist_cap`: 1 - cos(student, teacher) per item. They pin the student to the teacher's own
  space (relation terms alone leave it free up to a rotation), which is what lets a gallery enrolled by
  the teacher be searched with the student's text model, and the other way round.
- `dist_rel`: the student's image x caption similarity matrix follows the teacher's. Both are divided by
  one small temperature before a row-wise and column-wise softmax (the teacher's person similarities
  span only ~0..0.25; tau = 0.02 turns that into a usable distribution), and the KL divergence is taken,
  so the term is exactly 0 when the matrices agree.
- `mix_rel`: the same, with each trained student matched against the teacher's *other* modality
  (student images x teacher captions, teacher images x student captions). The teacher's side is fixed, so
  each student gets a steady target from the start instead of chasing the other, still untrained one;
  it trains exactly the mixed search a teacher-enrolled gallery needs. With one student it equals
  `dist_rel` (the teacher already stands in for the other).
- `rel_img`, `rel_cap`: the same within one modality, self-similarities (always 1) left out.
- `rkda`: the RKD angle loss (Park et al., CVPR 2019) within each modality, averaged over the two.
- `id_img`, `id_cap`, `id_img_cap`: XBM's contrastive loss (Wang et al., CVPR 2020) of the batch against
  a long memory of past embeddings (person.train.memory) plus the batch itself: same identity pulled to 1,
  other identities pushed below a margin; within images, within captions, and across the two. Averaged over
  the pairs that count rather than summed, so the memory's size does not scale the term.
- `d_pos`, `s_neg`: within the batch, matching image/caption pairs (same identity) pulled together
  (1 - cos), pairs of different identities pushed below the teacher's similarity for the same pair
  (same-identity pairs are never negatives).
- `sdm`: IRRA's similarity-distribution matching (Jiang & Ye, CVPR 2023): the softmax of the student's image x
  caption similarities at `sdm_temperature`, over rows and over columns, against the identity labels spread
  evenly over each row's same-identity entries (KL(prediction || labels)). It learns from identities alone, so
  it can carry the students past a teacher that is weak where the labels are.
- `total`: the weighted sum. A weight of 0 skips the term's computation and its log column.

A batch with unlabeled rows (person.train.unlabeled) puts them after the labelled ones: `labelled=(n_images,
n_captions)` says how many leading rows carry identities. IDENTITY_TERMS see only those; every other term needs
neither identities nor image-caption pairs and sees all rows: the teacher's own embeddings and similarities are
the targets, whatever rows they are of.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from person.train.classifier import IdentityClassifier
from person.train.memory import CrossModalMemory

TERMS = ("dist_img", "dist_cap", "dist_rel", "mix_rel", "rel_img", "rel_cap", "rkda", "id_img", "id_cap", "id_img_cap",
         "d_pos", "s_neg", "sdm", "id_cls")
IDENTITY_TERMS = ("id_img", "id_cap", "id_img_cap", "d_pos", "s_neg", "sdm", "id_cls")  # the labelled rows only
MEMORY_TERMS = ("id_img", "id_cap", "id_img_cap")  # the long memory's contrastive terms


def cosine_distill(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """mean(1 - cos(student_b, teacher_b)) over the batch (inputs normalised)."""
    return (1.0 - (student * teacher).sum(dim=1)).mean()


def relation_kl(student_sim: torch.Tensor, teacher_sim: torch.Tensor, temperature: float,
                skip_diagonal: bool = False) -> torch.Tensor:
    """KL(teacher || student) of softmax(sim / temperature), over rows and over columns, averaged.

    With `skip_diagonal` (square self-similarity matrices) each item's similarity to itself is left out.
    """
    s, t = student_sim / temperature, teacher_sim / temperature
    if skip_diagonal:
        eye = torch.eye(s.shape[0], dtype=torch.bool, device=s.device)
        s, t = s.masked_fill(eye, float("-inf")), t.masked_fill(eye, float("-inf"))

    def kl(s_logits: torch.Tensor, t_logits: torch.Tensor) -> torch.Tensor:
        log_p_t = F.log_softmax(t_logits, dim=1)
        log_p_s = F.log_softmax(s_logits, dim=1)
        # -inf - -inf on the skipped diagonal is NaN; its probability is 0, so it contributes 0.
        terms = log_p_t.exp() * (log_p_t - log_p_s)
        return torch.nan_to_num(terms, nan=0.0).sum(dim=1).mean()

    return 0.5 * (kl(s, t) + kl(s.T, t.T))


def rkd_angles(x: torch.Tensor) -> torch.Tensor:
    """angles[i, j, k] = cos of the angle at x_j between x_i and x_k (RKD's angle potential), [B, B, B]."""
    diff = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=2)  # diff[j, i] = unit(x_i - x_j)
    return torch.bmm(diff, diff.transpose(1, 2)).permute(1, 0, 2)


def rkd_angle(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD angle loss: smooth-L1 between student and teacher angle potentials over all triplets."""
    with torch.no_grad():
        t = rkd_angles(teacher)
    return F.smooth_l1_loss(rkd_angles(student), t)


def contrastive(anchor: torch.Tensor, anchor_pid: torch.Tensor, ref: torch.Tensor, ref_pid: torch.Tensor,
                margin: float, self_index: torch.Tensor | None = None) -> torch.Tensor:
    """XBM's contrastive loss, averaged over pairs: the mean of (1 - s) over positive pairs plus the mean of s
    over the negatives with s > margin (each 0 where there are none). `self_index[a]` is anchor a's own column
    in `ref` (left out). XBM sums both over the reference rows instead, which makes the term grow with the
    memory: at memory 4096 it reached ~1200 and the pair collapsed (BENCHMARKS.md); averaging over the pairs
    that count, as pytorch-metric-learning's default reducer does, keeps its scale whatever the memory size."""
    sim = anchor @ ref.T
    same = anchor_pid[:, None] == ref_pid[None, :]
    pos = same.clone()
    if self_index is not None:
        pos[torch.arange(len(anchor), device=anchor.device), self_index] = False
    neg = ~same & (sim > margin)
    # Sums over masks and counts clamped to 1 (0 where a set is empty): no data-dependent branch, so no GPU sync.
    pos_loss = torch.where(pos, 1.0 - sim, torch.zeros_like(sim)).sum() / pos.sum().clamp_min(1)
    neg_loss = torch.where(neg, sim, torch.zeros_like(sim)).sum() / neg.sum().clamp_min(1)
    return pos_loss + neg_loss


def pair_terms(s_img: torch.Tensor, s_cap: torch.Tensor, t_img: torch.Tensor, t_cap: torch.Tensor,
               pid: torch.Tensor, cap_pid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(d_pos, s_neg): mean 1 - cos over same-identity image/caption pairs, and mean excess of the
    student's over the teacher's similarity over different-identity pairs (0 where it is not higher)."""
    sim = s_img @ s_cap.T
    same = pid[:, None] == (pid if cap_pid is None else cap_pid)[None, :]
    d_pos = (1.0 - sim[same]).mean()
    with torch.no_grad():
        t_sim = t_img @ t_cap.T
    excess = F.relu(sim - t_sim)[~same]
    s_neg = excess.mean() if excess.numel() else sim.sum() * 0.0
    return d_pos, s_neg


def sdm(s_img: torch.Tensor, s_cap: torch.Tensor, pid: torch.Tensor, cap_pid: torch.Tensor, temperature: float,
        epsilon: float = 1e-8) -> torch.Tensor:
    """IRRA's SDM: sum over the two directions of mean KL(softmax(sim / temperature) || same-identity labels)."""
    sim = s_img @ s_cap.T / temperature
    same = (pid[:, None] == cap_pid[None, :]).to(sim.dtype)

    def direction(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        target = labels / labels.sum(dim=1, keepdim=True).clamp_min(1)
        log_p = F.log_softmax(logits, dim=1)
        return (log_p.exp() * (log_p - torch.log(target + epsilon))).sum(dim=1).mean()

    return direction(sim, same) + direction(sim.T, same.T)


@dataclass(frozen=True)
class LossWeights:
    dist_img: float = 1.0
    dist_cap: float = 1.0
    dist_rel: float = 1.0
    mix_rel: float = 0.0
    rel_img: float = 0.0
    rel_cap: float = 0.0
    rkda: float = 0.0
    id_img: float = 0.0
    id_cap: float = 0.0
    id_img_cap: float = 0.0
    d_pos: float = 0.0
    s_neg: float = 0.0
    sdm: float = 0.0
    id_cls: float = 0.0

    def active(self) -> tuple[str, ...]:
        return tuple(t for t in TERMS if getattr(self, t) != 0)


class DistillLoss:
    """Weighted distillation terms from a batch's embeddings; returns {term: value, ..., "total": sum}.

    With one student (`train="image"` or `"text"`) the teacher's embeddings stand in for the missing
    one: cross-modal terms then pull the trained student towards the teacher's other modality (student
    images against teacher captions), and terms of the missing modality alone are left out.
    """

    _NEEDS = {"dist_img": {"image"}, "dist_cap": {"text"}, "dist_rel": {"image", "text"},
              "mix_rel": {"image", "text"}, "rel_img": {"image"},
              "rel_cap": {"text"}, "rkda": {"image", "text"}, "id_img": {"image"}, "id_cap": {"text"},
              "id_img_cap": {"image", "text"}, "d_pos": {"image", "text"}, "s_neg": {"image", "text"},
              "sdm": {"image", "text"}, "id_cls": {"image", "text"}}

    def __init__(self, weights: LossWeights, temperature: float = 0.02, margin: float = 0.5,
                 train: str = "both", sdm_temperature: float = 0.02,
                 classifier: IdentityClassifier | None = None) -> None:
        if temperature <= 0 or sdm_temperature <= 0:
            raise ValueError(f"temperatures must be > 0, got {temperature} (relation) and {sdm_temperature} (sdm)")
        trained = {"image", "text"} if train == "both" else {train}
        self.weights, self.temperature, self.margin, self.trained = weights, temperature, margin, trained
        self.sdm_temperature, self.classifier = sdm_temperature, classifier
        if weights.id_cls and classifier is None:
            raise ValueError("the id_cls term needs an identity classifier (person.train.classifier)")
        self.terms = tuple(t for t in weights.active() if self._NEEDS[t] & trained)
        if not self.terms:
            raise ValueError(f"no loss term is active for --train {train}: give at least one term a non-zero "
                             f"weight (e.g. --dist_img_weight 1)")

    @property
    def students_used(self) -> set[str]:
        """The trained students ("image", "text") at least one active term gives a gradient to."""
        return set().union(*(self._NEEDS[t] for t in self.terms)) & self.trained

    @property
    def uses_memory(self) -> bool:
        return any(t in MEMORY_TERMS for t in self.terms)

    def __call__(self, s_img: torch.Tensor | None, s_cap: torch.Tensor | None, t_img: torch.Tensor, t_cap: torch.Tensor,
                 pid: torch.Tensor, memory: CrossModalMemory | None = None,
                 cap_pid: torch.Tensor | None = None,
                 labelled: tuple[int, int] | None = None,
                 track_pid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`cap_pid`: the captions' identities when there are not exactly one caption per image (default pid).
        `labelled`: (images, captions) of leading rows with identities (default: all); `pid` and `cap_pid` are
        theirs. `track_pid`: the unlabeled image rows' pseudo-identities from their tracks (-1: none), which
        id_img, the one identity term within the images, takes as identities too."""
        s_img = t_img if s_img is None else s_img
        s_cap = t_cap if s_cap is None else s_cap
        cap_pid = pid if cap_pid is None else cap_pid
        n_img, n_cap = (len(s_img), len(s_cap)) if labelled is None else labelled
        if len(cap_pid) != n_cap or len(pid) != n_img:
            raise ValueError(f"{n_img} labelled images with {len(pid)} identities, {n_cap} labelled captions with "
                             f"{len(cap_pid)}: give cap_pid when captions are not one per image")
        # Sliced only when there are unlabeled rows: a slice's backward adds the gradients in another order, and a
        # run without unlabeled rows must stay the run it always was, to the last bit.
        labelled_rows = (s_img, s_cap, t_img, t_cap) if (n_img, n_cap) == (len(s_img), len(s_cap)) else \
            (s_img[:n_img], s_cap[:n_cap], t_img[:n_img], t_cap[:n_cap])
        out: dict[str, torch.Tensor] = {}
        for term in self.terms:
            rows = labelled_rows if term in IDENTITY_TERMS else (s_img, s_cap, t_img, t_cap)  # identities unused
            ids = pid
            if term == "id_img" and track_pid is not None:
                tracked = track_pid != -1
                ids = torch.cat([pid, track_pid[tracked]])
                rows = (torch.cat([s_img[:n_img], s_img[n_img:][tracked]]), *rows[1:])
            out[term] = self._term(term, *rows, ids, cap_pid, memory)
        out["total"] = sum(getattr(self.weights, t) * out[t] for t in self.terms)
        return out

    def _term(self, term: str, s_img, s_cap, t_img, t_cap, pid, cap_pid, memory) -> torch.Tensor:
        tau = self.temperature
        if term == "dist_img":
            return cosine_distill(s_img, t_img)
        if term == "dist_cap":
            return cosine_distill(s_cap, t_cap)
        if term == "dist_rel":
            return relation_kl(s_img @ s_cap.T, t_img @ t_cap.T, tau)
        if term == "mix_rel":
            t_sim = t_img @ t_cap.T
            # A student the run does not train is its teacher already (s_img is t_img): its half would be
            # dist_rel again, so only the trained students' halves count.
            halves = ([relation_kl(s_img @ t_cap.T, t_sim, tau)] if "image" in self.trained else []) + \
                     ([relation_kl(t_img @ s_cap.T, t_sim, tau)] if "text" in self.trained else [])
            return sum(halves) / len(halves)
        if term == "rel_img":
            return relation_kl(s_img @ s_img.T, t_img @ t_img.T, tau, skip_diagonal=True)
        if term == "rel_cap":
            return relation_kl(s_cap @ s_cap.T, t_cap @ t_cap.T, tau, skip_diagonal=True)
        if term == "rkda":
            return 0.5 * (rkd_angle(s_img, t_img) + rkd_angle(s_cap, t_cap))
        if term in ("d_pos", "s_neg"):
            return pair_terms(s_img, s_cap, t_img, t_cap, pid, cap_pid)[0 if term == "d_pos" else 1]
        if term == "sdm":
            return sdm(s_img, s_cap, pid, cap_pid, self.sdm_temperature)
        if term == "id_cls":
            return self.classifier.loss(s_img, s_cap, pid, cap_pid, self.trained)
        return self._memory_term(term, s_img, s_cap, pid, cap_pid, memory)

    def _memory_term(self, term: str, s_img, s_cap, pid, cap_pid, memory) -> torch.Tensor:
        """Contrast the batch against itself and, once the memory is active, against the memory's rows."""
        def refs(batch: torch.Tensor, batch_pid: torch.Tensor, ring) -> tuple[torch.Tensor, torch.Tensor]:
            if memory is None or not memory.active:
                return batch, batch_pid
            emb, labels = ring.get()
            return torch.cat([batch, emb.to(batch.dtype)]), torch.cat([batch_pid, labels])

        def own(batch: torch.Tensor) -> torch.Tensor:  # an anchor's own row comes first in its refs
            return torch.arange(len(batch), device=batch.device)

        if term == "id_img":  # only the ring a term reads is joined to the batch (a copy of the memory)
            ref, ref_pid = refs(s_img, pid, memory.image if memory else None)
            return contrastive(s_img, pid, ref, ref_pid, self.margin, own(s_img))
        if term == "id_cap":
            ref, ref_pid = refs(s_cap, cap_pid, memory.text if memory else None)
            return contrastive(s_cap, cap_pid, ref, ref_pid, self.margin, own(s_cap))
        img_ref, img_ref_pid = refs(s_img, pid, memory.image if memory else None)
        cap_ref, cap_ref_pid = refs(s_cap, cap_pid, memory.text if memory else None)
        return 0.5 * (contrastive(s_img, pid, cap_ref, cap_ref_pid, self.margin)
                      + contrastive(s_cap, cap_pid, img_ref, img_ref_pid, self.margin))
