"""The generation SPM: its support decides what it draws, forgetting edits only the support, the sampler and the
metrics give known answers, and the Generate page runs (tiny models on digits)."""

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from core import bundle
from core.data import request_classes
from core.eval import generation as G
from core.models import get_model_kind, list_model_kinds
from core.models.gen_spm.diffusion import Diffusion, DiffusionConfig
from core.models.gen_spm.model import GenSPMConfig
from core.models.gen_spm.training import fit_gen_spm
from core.models.gen_spm.unet import Support, SupportUNet, UNetConfig
from core.models.training import TrainConfig

TINY = GenSPMConfig(unet=UNetConfig(channels=8, multipliers=(1, 2), groups=4),
                    diffusion=DiffusionConfig(sample_steps=4), train_support=16, sample_support=8, sample_chunk=16,
                    train_steps=12)
TINY_RECIPE = TrainConfig(epochs=1, batch_size=32, lr=1e-3, optimizer="adamw", weight_decay=0.0)


@pytest.fixture(scope="module", autouse=True)
def own_store(tmp_path_factory):
    """This module's models go to a store of its own and leave the process's memo after it: the classifier pages
    list every by-design kind, so a stored generator would show among them in later tests."""
    before = os.environ.get("UE_HOME")
    os.environ["UE_HOME"] = str(tmp_path_factory.mktemp("gen-spm-store"))
    yield
    if before is None:
        os.environ.pop("UE_HOME", None)
    else:
        os.environ["UE_HOME"] = before
    bundle.forget_memo()


@pytest.fixture(scope="module")
def gen_model(digits):
    """A tiny generation SPM trained a few steps on digits through the bundle (stored, then loaded)."""
    return bundle.train_or_load("gen-spm", digits, config=TINY, train_config=TINY_RECIPE).classifier


def test_registered_as_a_by_design_kind():
    assert "gen-spm" in list_model_kinds()
    spec = get_model_kind("gen-spm")
    assert spec.by_design and spec.config_cls is GenSPMConfig


def test_named_configs_are_the_cpu_model_and_the_authors_cifar_network():
    from core.models.gen_spm import NAMED_CONFIGS

    cpu, gpu = NAMED_CONFIGS["cpu-28"], NAMED_CONFIGS["gpu-32"]
    assert cpu == GenSPMConfig() and bundle.recipe("fashion-mnist", "gen-spm").epochs == 4
    assert (gpu.unet.channels, gpu.unet.multipliers, gpu.unet.attention_resolutions) == (128, (1, 2, 2, 2), (16,))
    assert (gpu.support_t_max, gpu.support_time, gpu.loss_weight) == (1.0, "query", "simple")
    assert (gpu.diffusion.guidance, gpu.guide_support, gpu.train_support) == (0.3, False, 256)
    params = sum(p.numel() for p in SupportUNet((3, 32, 32), 10, gpu.unet).parameters())
    assert 38e6 < params < 39e6  # the note closing the authors' nets/unet_spm.py: 38.6M for their CIFAR-10 UNet
    assert sum(p.numel() for p in SupportUNet((1, 28, 28), 10, cpu.unet).parameters()) * 4 < 10e6  # ships in 10 MB


def test_support_of_one_class_changes_no_output_for_another_label():
    torch.manual_seed(0)
    net = SupportUNet((1, 8, 8), 10, replace(TINY.unet, dropout=0.0)).eval()
    x, t = torch.randn(6, 1, 8, 8), torch.full((6,), 400)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    drop = torch.zeros(6, dtype=torch.bool)
    s_labels = torch.tensor([0, 0, 1, 1, 2, 2])
    s_x = torch.rand(6, 1, 8, 8)
    changed = s_x.clone()
    changed[s_labels == 1] = torch.rand(2, 1, 8, 8)  # another support for class 1 only
    a = net(x, t, labels, drop, net.support_features(s_x, t, s_labels))
    b = net(x, t, labels, drop, net.support_features(changed, t, s_labels))
    other = labels != 1
    assert torch.equal(a[other], b[other])
    assert not torch.allclose(a[~other], b[~other])


def test_middle_block_keeps_no_path_from_the_query_own_middle_features():
    """With one support patch vector v, attention returns v whatever the query: two different queries then leave
    the middle block identical, which a residual path from the query's own features would prevent."""
    torch.manual_seed(0)
    net = SupportUNet((1, 8, 8), 10, replace(TINY.unet, dropout=0.0)).eval()
    t_emb, c_emb = torch.randn(1, net.emb_dim).expand(2, -1), torch.randn(1, net.emb_dim).expand(2, -1)
    h = torch.randn(2, 16, 2, 2)  # two different queries at the bottleneck
    v = torch.randn(16)
    support = Support(v.expand(1, 16, 16).clone(), torch.zeros(1, dtype=torch.long))
    out = net.middle(h, t_emb, c_emb, torch.zeros(2, dtype=torch.long), support)
    assert torch.allclose(out[0], out[1], atol=1e-6)
    empty = Support(support.features[:0], support.labels[:0])  # no support for the label: the block reads nothing
    alone = net.middle(h, t_emb, c_emb, torch.zeros(2, dtype=torch.long), empty)
    assert torch.allclose(alone[0], alone[1], atol=1e-6)


def test_sampling_another_class_is_unchanged_by_forgetting_q(gen_model, digits):
    after = gen_model.forget_class(3)
    assert np.array_equal(gen_model.sample(5, 6, noise_seed=1), after.sample(5, 6, noise_seed=1))
    assert not np.array_equal(gen_model.sample(3, 6, noise_seed=1), after.sample(3, 6, noise_seed=1))


def test_forgetting_is_deterministic_given_the_noise_seed(gen_model, digits):
    ids = np.flatnonzero(digits.y_train == 4)[:20]
    for forget in (lambda m: m.forget_class(3), lambda m: m.forget(ids)):
        one, two = forget(gen_model), forget(gen_model)
        assert np.array_equal(one.sample(3, 5, noise_seed=7), two.sample(3, 5, noise_seed=7))
        assert np.array_equal(one.sample(4, 5, noise_seed=7), two.sample(4, 5, noise_seed=7))
        assert not np.array_equal(one.sample(3, 5, noise_seed=7), one.sample(3, 5, noise_seed=8))


def test_removing_a_sample_removes_it_from_every_support(gen_model, digits):
    donor_ids = np.flatnonzero(digits.y_train == 0)
    shared = gen_model.forget_class(3, donor=0)  # class 0's images now fill two pools: 0 and 3
    assert np.array_equal(shared.pools[3], shared.pools[0])
    gone = donor_ids[:40]
    after = shared.forget(gone)
    assert not any(np.isin(gone, pool).any() for pool in after.pools.values())
    assert after.memory_check(gone)["forgotten_in_memory"] == 0
    assert after.memory_check(gone)["pools_holding_forgotten"] == 0
    assert shared.memory_check(gone)["forgotten_in_memory"] == 40  # the model it came from is unchanged
    drawn = np.concatenate([after.draw_support(c, seed, chunk) for c in range(10) for seed in range(20)
                            for chunk in range(3)])
    assert not np.isin(gone, drawn).any()
    with pytest.raises(ValueError, match="already forgotten"):
        after.forget(gone[:1])


def test_forgetting_moves_no_weight_and_class_q_reads_the_donor(gen_model, digits):
    before = {k: v.clone() for k, v in gen_model.networks()["net"].state_dict().items()}
    after = gen_model.forget_class(3)
    state = after.networks()["net"].state_dict()
    assert all(torch.equal(before[k], state[k]) for k in before)
    q_ids = np.flatnonzero(digits.y_train == 3)
    check = after.memory_check(q_ids)
    assert check["forgotten_in_memory"] == 0 and check["relabelled_pools"] == {3: 0}
    assert (digits.y_train[after.pools[3]] == 0).all()
    assert (digits.y_train[gen_model.forget_class(0).pools[0]] == 1).all()  # the reference's donor for q = 0


def test_training_support_excludes_the_batch_and_is_balanced(digits):
    seen = []
    config = replace(TINY, train_steps=3)
    net = SupportUNet(digits.image_shape, digits.num_classes, config.unet)
    log = fit_gen_spm(net, digits, digits.train_ids, config, TINY_RECIPE,
                      support_hook=lambda batch, support: seen.append((batch, support)))
    assert log["steps"] == 3 and len(seen) == 3
    for batch, support in seen:
        assert not np.isin(support, batch).any()
        batch_labels = set(digits.y_train[batch].tolist())
        counts = np.bincount(digits.y_train[support], minlength=10)
        assert set(np.flatnonzero(counts)) == batch_labels
        assert counts[list(batch_labels)].max() - counts[list(batch_labels)].min() == 0


def test_stored_model_loads_back_and_samples_the_same(gen_model, digits):
    bundle.forget_memo()
    again = bundle.train_or_load("gen-spm", digits, config=TINY, train_config=TINY_RECIPE, allow_train=False)
    assert np.array_equal(again.classifier.sample(2, 4, noise_seed=3), gen_model.sample(2, 4, noise_seed=3))


def test_ddim_with_an_exact_denoiser_lands_on_its_image():
    diffusion = Diffusion(DiffusionConfig(sample_steps=10))
    target = torch.rand(3, 1, 4, 4) * 2 - 1
    ab = diffusion.alpha_bar

    def eps_fn(x, t, drop):  # the noise that makes x_t from the target image, at every step
        a = ab[t].view(-1, 1, 1, 1)
        return (x - a.sqrt() * target.repeat(len(x) // len(target), 1, 1, 1)) / (1 - a).sqrt()

    out = diffusion.sample(eps_fn, torch.randn(3, 1, 4, 4), torch.Generator().manual_seed(0))
    assert torch.allclose(out, target, atol=1e-4)
    assert diffusion.ddim_times(50)[:2] == [981, 961] and diffusion.ddim_times(50)[-2:] == [1, 0]


def test_frechet_distance_known_answers():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 6))
    assert G.frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    shift = np.arange(6.0)
    assert G.frechet_distance(a, a + shift) == pytest.approx((shift ** 2).sum(), rel=1e-6)
    from scipy.linalg import sqrtm

    b = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * sqrtm(ca @ cb).real)
    assert G.frechet_distance(a, b) == pytest.approx(reference, rel=1e-6)


class _FixedClassifier:
    """Labels an image by its first pixel (0..9 scaled to 0..0.9); embeds it as its pixels."""

    def predict_proba(self, x):
        return np.eye(10)[np.round(x[:, 0, 0, 0] * 10).astype(int)]

    def embed(self, x):
        return x.reshape(len(x), -1)


def test_class_accuracy_counts_the_classifier_labels():
    images = np.zeros((4, 1, 2, 2), np.float32)
    images[:3, 0, 0, 0] = 0.3  # three labelled 3, one labelled 0
    assert G.class_accuracy(_FixedClassifier(), {3: images}) == {3: 75.0}


def test_memorisation_finds_copies_of_training_images_deleted_or_not(digits):
    neighbours = G.TrainingNeighbours(digits)
    copies = digits.x_train[[5, 17, 300]]
    found = G.memorisation(neighbours, copies)
    assert found.ids[:, 0].tolist() == [5, 17, 300] and found.near_copy.all()
    summary = found.summary(forgotten=np.array([5, 17]))
    assert summary["nearest_is_forgotten_pct"] == pytest.approx(200 / 3)
    assert summary["forgotten_images_copied"] == 2
    noise = np.random.default_rng(0).random((5, *digits.image_shape)).astype(np.float32)
    assert not G.memorisation(neighbours, noise).near_copy.any()


def test_class_forgetting_report_on_real_images(digits):
    """Real test images as 'generated' ones: accuracies, UA and FDs take their known values."""
    clf = _FixedClassifier()
    by_class = {c: digits.x_test[digits.y_test == c][:20] for c in range(10)}
    labelled = {c: x.copy() for c, x in by_class.items()}
    for c, x in labelled.items():
        x[:, 0, 0, 0] = c / 10  # the fixed classifier reads the class here
    after = {**labelled, 3: labelled[0]}  # class 3 now draws class-0 images
    report = G.class_forgetting_report(clf, digits, 3, labelled, after, [after])
    assert report["class_acc_before"] == 100 and report["ua"] == 100
    assert report["retained_acc_drop"] == 0 and report["oracle_ua"] == 100
    assert report["fd_o"] == pytest.approx(0, abs=1e-6)


def test_generate_page_draws_three_grids_from_the_same_noise(digits):
    """AppTest of pages/generate.py with the kind's default recipe on digits (a few seconds of training): the
    original, the oracle without class 0 and the parametric network that labels the images are stored first (in
    this module's store), so the page only loads them."""
    from streamlit.testing.v1 import AppTest

    from core import workflow
    from core.views import class_label
    from pages.state import KEY, SessionState

    trained = bundle.train_or_load("gen-spm", digits)
    labeller = bundle.train_or_load("parametric", digits).classifier
    workflow.oracle("gen-spm", digits, request_classes(digits, [0]), seed_offset=1)  # the page's oracle
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "pages" / "generate.py"), default_timeout=300)
    at.session_state[KEY] = SessionState(dataset_name=digits.name, dataset=digits, sidebar_drawn=True)
    at.run()
    assert not at.exception, at.exception
    from pages.common import backend

    for job in backend().jobs():
        job.wait(300)
    at.run()
    assert not at.exception, at.exception
    assert any("0 of its" in s.value and "No weight changed" in s.value for s in at.success)
    at.slider(key="gen-steps").set_value(10)
    at.slider(key="gen-n").set_value(4)
    at.button(key="gen-go").click().run()
    assert not at.exception, at.exception
    titles = [m.value for m in at.markdown if m.value.startswith("**")]
    assert [t.split(":")[0] for t in titles] == ["**Before forgetting", "**After forgetting", "**Oracle"], \
        (titles, [(j.title, j.state, j.error) for j in backend().jobs()])
    captions = [c for image in at.get("image") for c in image.captions]
    assert sum(" → " in c for c in captions) == 3 * 4, captions  # three grids, each image with its label
    expected = G.predicted_labels(labeller, trained.classifier.sample(0, 4, 0, 10))
    assert captions[:4] == [f"#{i} → {class_label(digits, c)}" for i, c in enumerate(expected)]  # same noise
