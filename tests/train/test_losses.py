"""Losses on hand-built inputs: zero where student equals teacher, formulas checked term by term."""
import math

import pytest
import torch
import torch.nn.functional as F

from person.train.losses import (TERMS, DistillLoss, LossWeights, contrastive, cosine_distill, pair_terms, relation_kl,
                                 rkd_angle, rkd_angles, sdm)
from person.train.memory import CrossModalMemory


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float64), dim=1)


def rand_unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1)


def test_cosine_distill_value():
    s = unit([1, 0], [0, 1])
    t = unit([1, 0], [1, 1])
    assert cosine_distill(s, s).item() == 0.0
    assert cosine_distill(s, t).item() == pytest.approx((0 + (1 - math.sqrt(0.5))) / 2)


def test_relation_kl_is_zero_on_equal_matrices_and_matches_the_formula():
    t_sim = torch.tensor([[0.2, 0.1], [0.0, 0.25]], dtype=torch.float64)
    s_sim = torch.tensor([[0.5, -0.1], [0.1, 0.3]], dtype=torch.float64)
    assert relation_kl(t_sim, t_sim, 0.02).item() == pytest.approx(0.0, abs=1e-15)

    def kl_rows(s, t):
        total = 0.0
        for i in range(2):
            pt = [math.exp(t[i][j] / 0.1) for j in range(2)]
            ps = [math.exp(s[i][j] / 0.1) for j in range(2)]
            pt = [v / sum(pt) for v in pt]
            ps = [v / sum(ps) for v in ps]
            total += sum(pt[j] * math.log(pt[j] / ps[j]) for j in range(2))
        return total / 2

    s, t = s_sim.tolist(), t_sim.tolist()
    cols = lambda m: [list(r) for r in zip(*m)]
    expected = 0.5 * (kl_rows(s, t) + kl_rows(cols(s), cols(t)))
    assert relation_kl(s_sim, t_sim, 0.1).item() == pytest.approx(expected, rel=1e-12)


def test_relation_kl_skip_diagonal_ignores_self_similarity():
    t = rand_unit(5, 8, 0)
    s = rand_unit(5, 8, 1)
    s_sim, t_sim = s @ s.T, t @ t.T
    base = relation_kl(s_sim, t_sim, 0.05, skip_diagonal=True)
    changed = s_sim.clone()
    changed.diagonal().fill_(-3.0)
    assert torch.isfinite(base)
    assert relation_kl(changed, t_sim, 0.05, skip_diagonal=True).item() == pytest.approx(base.item(), rel=1e-12)
    assert relation_kl(t_sim, t_sim, 0.05, skip_diagonal=True).item() == pytest.approx(0.0, abs=1e-12)


def test_rkd_angles_match_the_definition_and_loss_is_zero_on_equal():
    x = rand_unit(4, 3, 2)
    a = rkd_angles(x)
    for i in range(4):
        for j in range(4):
            for k in range(4):
                if i == j or k == j:
                    assert a[i, j, k].item() == 0.0
                    continue
                e1 = F.normalize(x[i] - x[j], dim=0)
                e2 = F.normalize(x[k] - x[j], dim=0)
                assert a[i, j, k].item() == pytest.approx(torch.dot(e1, e2).item(), abs=1e-12)
    y = rand_unit(4, 3, 3)
    assert rkd_angle(x, x).item() == 0.0
    assert rkd_angle(y, x).item() == pytest.approx(F.smooth_l1_loss(rkd_angles(y), rkd_angles(x)).item())
    # Angles are scale-free: RKD compares structure, not the embedding's size.
    assert rkd_angle(2 * x, x).item() == pytest.approx(0.0, abs=1e-12)


def test_contrastive_hand_computed_and_same_identity_never_negative():
    anchor = unit([1, 0], [0, 1])
    ref = unit([1, 0], [0, 1], [1, 1], [-1, 1])
    pid = torch.tensor([0, 1])
    ref_pid = torch.tensor([0, 1, 0, 2])
    # sims: a0: [1, 0, .7071, -.7071]; a1: [0, 1, .7071, .7071]
    # positives (self excluded): a0-ref2 -> 1 - .7071; a1 has none. Mean over the one pair.
    # negatives above .5: a1-ref2 (pid 0) and a1-ref3 (pid 2), both .7071; a0's (0, -.7071) are below.
    value = contrastive(anchor, pid, ref, ref_pid, margin=0.5, self_index=torch.tensor([0, 1]))
    assert value.item() == pytest.approx((1 - math.sqrt(0.5)) + math.sqrt(0.5))
    # The same high similarity with the same identity is a positive, never a negative.
    same = contrastive(anchor[1:], torch.tensor([0]), ref[2:3], torch.tensor([0]), margin=0.5)
    assert same.item() == pytest.approx(1 - math.sqrt(0.5))
    # No positive and no negative above the margin: 0, with a gradient path.
    lone = anchor[:1].clone().requires_grad_()
    none = contrastive(lone, pid[:1], ref[1:2], ref_pid[1:2], margin=0.5)
    none.backward()
    assert none.item() == 0.0 and lone.grad is not None and not lone.grad.any()


def test_contrastive_scale_does_not_grow_with_the_memory():
    # A memory holding the same rows four times over is the same evidence: the averaged term is unchanged
    # (XBM's sum over the rows would be 4x: at memory 4096 it reached ~1200 and the training collapsed).
    gen = torch.Generator().manual_seed(0)
    anchor = F.normalize(torch.randn(6, 8, generator=gen), dim=1)
    ref = F.normalize(torch.randn(10, 8, generator=gen), dim=1)
    pid, ref_pid = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    once = contrastive(anchor, pid, ref, ref_pid, margin=-0.2)
    four = contrastive(anchor, pid, ref.repeat(4, 1), ref_pid.repeat(4), margin=-0.2)
    assert four.item() == pytest.approx(once.item(), rel=1e-6)
    sim = anchor @ ref.T
    same = pid[:, None] == ref_pid[None, :]
    expected = (1 - sim[same]).mean() + sim[~same & (sim > -0.2)].mean()
    assert once.item() == pytest.approx(expected.item(), rel=1e-6)


def test_pair_terms():
    s_img = unit([1, 0], [0, 1], [1, 1])
    s_cap = unit([1, 0], [1, 0], [0, 1])
    pid = torch.tensor([0, 0, 1])
    t = unit([1, 0], [1, 0], [1, 0])  # the teacher sees every pair at similarity 1 -> no excess anywhere
    d_pos, s_neg = pair_terms(s_img, s_cap, t, t, pid)
    # same-identity pairs: (0,0)=1, (0,1)=1, (1,0)=0, (1,1)=0, (2,2)=.7071
    assert d_pos.item() == pytest.approx((0 + 0 + 1 + 1 + (1 - math.sqrt(0.5))) / 5)
    assert s_neg.item() == 0.0
    t2 = unit([0, 1], [0, 1], [1, 0])  # now the teacher keeps other identities apart
    _, s_neg = pair_terms(s_img, s_cap, t2, t2, pid)
    # negatives (i, j) with pid differing: (0,2),(1,2),(2,0),(2,1); student sims 0, 1, .7071, .7071;
    # teacher sims t2[i].t2[j]: (0,2)=0, (1,2)=0, (2,0)=0, (2,1)=0 -> excess = the student sims
    assert s_neg.item() == pytest.approx((0 + 1 + 2 * math.sqrt(0.5)) / 4)


def test_distill_terms_are_zero_when_student_equals_teacher():
    img, cap = rand_unit(6, 16, 4), rand_unit(6, 16, 5)
    pid = torch.tensor([0, 0, 1, 1, 2, 2])
    loss = DistillLoss(LossWeights(dist_img=1, dist_cap=1, dist_rel=1, mix_rel=1, rel_img=1, rel_cap=1, rkda=1,
                                   s_neg=1))
    out = loss(img, cap, img, cap, pid)
    for term in ("dist_img", "dist_cap", "dist_rel", "mix_rel", "rel_img", "rel_cap", "rkda", "s_neg"):
        assert out[term].item() == pytest.approx(0.0, abs=1e-9), term


def test_weights_total_and_skipped_terms():
    img, cap, t_img, t_cap = (rand_unit(4, 8, s) for s in range(4))
    pid = torch.tensor([0, 0, 1, 1])
    weights = LossWeights(dist_img=2.0, dist_cap=0.0, dist_rel=0.5, id_img=1.0)
    out = DistillLoss(weights)(img, cap, t_img, t_cap, pid)
    assert set(out) == {"dist_img", "dist_rel", "id_img", "total"}  # weight 0: not computed, not logged
    assert out["total"].item() == pytest.approx(2 * out["dist_img"].item() + 0.5 * out["dist_rel"].item()
                                                + out["id_img"].item())
    image_only = DistillLoss(LossWeights(dist_img=1, dist_cap=1, dist_rel=1), train="image")
    out = image_only(img, None, t_img, t_cap, pid)
    assert set(out) == {"dist_img", "dist_rel", "total"}  # the teacher's captions stand in for the text student
    assert out["dist_rel"].item() == pytest.approx(relation_kl(img @ t_cap.T, t_img @ t_cap.T, 0.02).item())
    with pytest.raises(ValueError, match="no loss term is active for --train text"):
        DistillLoss(LossWeights(dist_img=1, dist_cap=0, dist_rel=0), train="text")
    assert set(TERMS) == set(LossWeights.__dataclass_fields__)


def test_mix_rel_matches_each_trained_student_against_the_teachers_other_modality():
    img, cap, t_img, t_cap = (rand_unit(5, 8, s) for s in range(10, 14))
    pid = torch.arange(5)
    t_sim = t_img @ t_cap.T
    image_half = relation_kl(img @ t_cap.T, t_sim, 0.05).item()
    text_half = relation_kl(t_img @ cap.T, t_sim, 0.05).item()
    assert image_half > 0 and text_half > 0
    weights = LossWeights(dist_img=0, dist_cap=0, dist_rel=0, mix_rel=1)
    both = DistillLoss(weights, temperature=0.05)(img, cap, t_img, t_cap, pid)
    assert set(both) == {"mix_rel", "total"}
    assert both["mix_rel"].item() == pytest.approx(0.5 * (image_half + text_half))
    # The student-student matrix plays no part: only the teacher's side pairs with each student.
    assert DistillLoss(weights, temperature=0.05)(img, t_cap, t_img, t_cap, pid)["mix_rel"].item() == \
        pytest.approx(0.5 * image_half)
    # With one student, it is that student's half, which is dist_rel with the teacher standing in.
    text_only = DistillLoss(LossWeights(dist_img=0, dist_cap=0, dist_rel=1, mix_rel=1), temperature=0.05, train="text")
    out = text_only(None, cap, t_img, t_cap, pid)
    assert out["mix_rel"].item() == pytest.approx(text_half) and out["dist_rel"].item() == pytest.approx(text_half)


def test_memory_rows_join_the_contrastive_terms_once_active():
    img, cap = rand_unit(2, 4, 7), rand_unit(2, 4, 8)
    pid = torch.tensor([0, 1])
    loss = DistillLoss(LossWeights(dist_img=0, dist_cap=0, dist_rel=0, id_img=1, id_cap=1, id_img_cap=1), margin=-1.0)
    memory = CrossModalMemory(8, 4, dtype=torch.float64, warmup_iters=1)
    before = loss(img, cap, img, cap, pid, memory)
    memory.update((img, pid), (cap, pid))  # warm-up step: nothing enqueued
    assert memory.image.filled == 0 and memory.active
    past_img, past_cap, past_pid = rand_unit(2, 4, 9), rand_unit(2, 4, 10), torch.tensor([0, 2])
    memory.update((past_img, past_pid), (past_cap, past_pid))
    after = loss(img, cap, img, cap, pid, memory)
    # Each anchor now also sees the past rows: identity 0's a positive of anchor 0, the rest negatives.
    ref = torch.cat([img, past_img])
    expected = contrastive(img, pid, ref, torch.cat([pid, past_pid]), -1.0, torch.arange(2))
    assert after["id_img"].item() == pytest.approx(expected.item())
    assert after["id_img"].item() != pytest.approx(before["id_img"].item())


def test_several_captions_per_image_use_the_captions_identities():
    s_img = unit([1, 0], [0, 1])
    s_cap = unit([1, 0], [1, 1], [0, 1])  # captions 0 and 1 describe image 0 (identity 7), caption 2 image 1 (8)
    pid, cap_pid = torch.tensor([7, 8]), torch.tensor([7, 7, 8])
    t_img, t_cap = unit([1, 0], [1, 0]), unit([1, 0], [1, 0], [1, 0])  # the teacher sees every pair at 1
    d_pos, s_neg = pair_terms(s_img, s_cap, t_img, t_cap, pid, cap_pid)
    # same-identity pairs: (0,0)=1, (0,1)=.7071, (1,2)=1; others are negatives, below the teacher's 1
    assert d_pos.item() == pytest.approx((0 + (1 - math.sqrt(0.5)) + 0) / 3) and s_neg.item() == 0.0
    loss = DistillLoss(LossWeights(dist_img=1, dist_cap=1, dist_rel=1, mix_rel=1, rel_cap=1, rkda=1, id_cap=1,
                                   id_img_cap=1, d_pos=1, s_neg=1), margin=0.5)
    out = loss(s_img, s_cap, t_img, t_cap, pid, cap_pid=cap_pid)
    assert out["d_pos"].item() == pytest.approx(d_pos.item())
    assert out["dist_cap"].item() == pytest.approx(cosine_distill(s_cap, t_cap).item())
    assert out["dist_rel"].item() == pytest.approx(relation_kl(s_img @ s_cap.T, t_img @ t_cap.T, 0.02).item())
    # Caption 1's positive is caption 0 (same identity); caption 2 has none and its negatives sit at .7071, 0.
    own = torch.arange(3)
    assert out["id_cap"].item() == pytest.approx(contrastive(s_cap, cap_pid, s_cap, cap_pid, 0.5, own).item())
    # Positives c0-c1 and c1-c0 (1 - .7071 each), negatives above .5: c1-c2 and c2-c1 (.7071 each).
    assert out["id_cap"].item() == pytest.approx((1 - math.sqrt(0.5)) + math.sqrt(0.5))
    cross = 0.5 * (contrastive(s_img, pid, s_cap, cap_pid, 0.5) + contrastive(s_cap, cap_pid, s_img, pid, 0.5))
    assert out["id_img_cap"].item() == pytest.approx(cross.item())
    with pytest.raises(ValueError, match="give cap_pid when captions are not one per image"):
        loss(s_img, s_cap, t_img, t_cap, pid)


def test_sdm_matches_irra_by_hand_and_spreads_the_labels_over_an_identitys_captions():
    eye = unit([1, 0], [0, 1])
    eps = 1e-8
    p = math.e / (math.e + 1)  # softmax of [1, 0] at temperature 1
    one_direction = p * (math.log(p) - math.log(1 + eps)) + (1 - p) * (math.log(1 - p) - math.log(eps))
    value = sdm(eye, eye, torch.tensor([0, 1]), torch.tensor([0, 1]), temperature=1.0)
    assert value.item() == pytest.approx(2 * one_direction)
    # Two captions of identity 0: image 0's target is half on each, so an image equally close to both scores less
    # than one that prefers one of them.
    caps = unit([1, 0], [1, 0], [0, 1])
    even = sdm(unit([1, 0]), caps, torch.tensor([0]), torch.tensor([0, 0, 1]), 0.1)
    uneven = sdm(unit([1, 0]), unit([1, 0], [0.5, 0.5], [0, 1]), torch.tensor([0]), torch.tensor([0, 0, 1]), 0.1)
    assert even < uneven
    weights = LossWeights(dist_img=0, dist_cap=0, dist_rel=0, sdm=1.0)
    out = DistillLoss(weights, sdm_temperature=1.0)(eye, eye, eye, eye, torch.tensor([0, 1]))
    assert set(out) == {"sdm", "total"} and out["total"].item() == pytest.approx(2 * one_direction)
