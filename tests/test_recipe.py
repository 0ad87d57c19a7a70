"""The training recipe of the user's own data: sized to it, so that a small upload is learned, not under-trained."""

import io
from dataclasses import replace

import numpy as np
import pytest

from core import bundle
from core.data import load_dataset, load_user_data, register_user_dataset
from core.models.training import TrainConfig


@pytest.fixture(scope="module")
def upload():
    """Four digits classes as the user's .npz (460 training images): a small upload, as a teacher's own might be."""
    digits = load_dataset("digits")
    keep = np.isin(digits.y_train, [0, 1, 2, 3])
    x = (digits.x_train[keep][:, 0] * 255 / digits.x_train.max()).astype(np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=digits.y_train[keep])
    return load_user_data(buffer.getvalue(), source_name="mine.npz", name="upload:mine").dataset


def steps(tc: TrainConfig, num_train: int) -> int:
    return -(-num_train // tc.batch_size) * tc.epochs


def test_the_users_data_gets_enough_steps_and_registered_datasets_keep_their_recipes(upload):
    for kind in ("parametric", "spm", "vit"):
        tc = bundle.recipe(upload, kind)
        assert steps(tc, upload.num_train) >= bundle.MIN_STEPS, tc
        assert bundle.MIN_BATCH <= tc.batch_size <= bundle.recipe(upload.name, kind).batch_size
        assert replace(tc, epochs=0, batch_size=0) == replace(bundle.recipe(upload.name, kind), epochs=0, batch_size=0)
    register_user_dataset("mine-on-the-command-line", upload)  # --data PATH --dataset NAME: sized the same way
    assert bundle.recipe(load_dataset("mine-on-the-command-line"), "spm") == bundle.recipe(upload, "spm")
    digits = load_dataset("digits")
    assert bundle.recipe(digits, "spm") == bundle.recipe("digits", "spm")  # the shipped and stored models' keys hold
    big = bundle.sized_recipe(bundle.DEFAULT_RECIPE, 50_000)
    assert big == bundle.DEFAULT_RECIPE  # 3,910 steps already
    tiny = bundle.sized_recipe(bundle.DEFAULT_RECIPE, 12)
    assert tiny.batch_size == bundle.MIN_BATCH and tiny.epochs == bundle.MAX_EPOCHS


@pytest.mark.parametrize("kind", ["spm", "parametric"])
def test_a_small_upload_is_learned_by_its_recipe(upload, kind):
    """With 10 epochs of batch 128 (30 steps) SPM reached 57% on this upload; sized, every seed learns it."""
    base = bundle.recipe(upload, kind)
    for seed in (0, 1, 2):
        trained = bundle.train_or_load(kind, upload, train_config=replace(base, seed=seed))
        accuracy = (trained.classifier.split_proba(upload, "test").argmax(1) == upload.y_test).mean() * 100
        assert accuracy >= 90, (kind, seed, accuracy)
