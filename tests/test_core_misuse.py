"""Regression tests of issue 12 for steering, TTA, heads, evaluation and datasets: silent
wrong results in low precision, misuse that must raise an error naming the argument, and
memory that steered TTA must not hold."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from equimod_plugin import EquivarianceHead, SteeringOperator, augment
from equimod_plugin.eval.datasets import load_fashion_mnist, random_hue_labels, tint
from equimod_plugin.eval.probes import extract_features, knn_accuracy, linear_probe
from equimod_plugin.tta import SteeredTTA, dispersion, tta_params

KINDS = ["low_rank", "exponential", "full"]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
LOW = [torch.float16, torch.bfloat16]


def operator(kind: str, dim: int = 32, param_dim: int = 18, **kwargs) -> SteeringOperator:
    torch.manual_seed(0)
    return SteeringOperator(dim, param_dim, kind=kind, **kwargs)


def cast(args: tuple, dtype: torch.dtype) -> tuple:
    return tuple(t.to(dtype) if t.is_floating_point() else t for t in args)


# --- B4: the steering operator in every dtype ------------------------------------------------


@pytest.mark.exactness
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_identity_parameters_map_f_to_f_in_every_dtype(kind: str, dtype: torch.dtype) -> None:
    # the identity is exact by construction (d = 0 rows, expm(0) = I): a replay, not a kernel
    identity = torch.linspace(-1, 1, 18)
    op = operator(kind, identity=identity).to(dtype)
    f = torch.randn(4, 32, generator=torch.Generator().manual_seed(1)).to(dtype)
    params = identity.to(dtype).expand(4, -1)
    assert torch.equal(op(f, params), f)
    assert torch.equal(op.steer_many(f, params[:3]), f[:, None].expand(4, 3, 32))
    assert torch.equal(op.maps(params), torch.eye(32, dtype=dtype).expand(4, 32, 32))


@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_exponential_in_low_precision_stays_close_to_float32(dtype: torch.dtype) -> None:
    op = operator("exponential")
    f = torch.randn(4, 32, generator=torch.Generator().manual_seed(1))
    a = 0.5 * torch.randn(4, 18, generator=torch.Generator().manual_seed(2))
    expected = op(f, a)
    low = op.to(dtype)(f.to(dtype), a.to(dtype))
    assert low.dtype == dtype
    torch.testing.assert_close(low.float(), expected, rtol=0.05, atol=0.05)


# --- B8: kNN and linear probe in low precision -----------------------------------------------


def near_clusters(noise: float = 0.1) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Four classes in a narrow cone: every cosine similarity is above 0.8, so
    ``exp(similarity / 0.07)`` overflows float16, and neighbourhoods mix classes."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(4, (600,), generator=g)
    features = 1.0 + 0.3 * F.one_hot(labels, 16) + noise * torch.randn(600, 16, generator=g)
    return features[:400], labels[:400], features[400:], labels[400:]


@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_knn_accuracy_in_low_precision_matches_float32(dtype: torch.dtype) -> None:
    args = near_clusters()
    expected = knn_accuracy(*args)
    assert expected > 0.9
    # float16 rounding of the features may change a neighbour or two, not the accuracy
    assert knn_accuracy(*cast(args, dtype)) == pytest.approx(expected, abs=0.015)


def test_knn_accuracy_with_a_small_temperature_does_not_overflow() -> None:
    args = near_clusters()
    expected = knn_accuracy(*cast(args, torch.float64), temperature=0.005)
    assert expected > 0.9
    assert knn_accuracy(*args, temperature=0.005) == pytest.approx(expected, abs=0.01)


@pytest.mark.exactness
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_linear_probe_in_low_precision_runs_in_float32(dtype: torch.dtype) -> None:
    # the low-precision features are upcast first: the same computation as on their float32
    # copy (float16 L-BFGS overflowed: "value cannot be converted to type c10::Half")
    args = cast(near_clusters(noise=0.05), dtype)
    assert linear_probe(*args) == linear_probe(*cast(args, torch.float32))


@pytest.mark.parametrize("probe", [linear_probe, knn_accuracy])
def test_mixed_feature_dtypes_are_rejected_by_name(probe) -> None:
    train, train_labels, test, test_labels = near_clusters()
    with pytest.raises(ValueError, match="train_features and test_features must share one dtype"):
        probe(train, train_labels, test.double(), test_labels)


@pytest.mark.exactness
@pytest.mark.parametrize("probe", [linear_probe, knn_accuracy])
def test_large_labels_cost_one_class_each(probe) -> None:
    # a label of 10**9 asked linear_probe for a (D, 10**9 + 1) classifier (32 GB); classes
    # are the distinct train labels, so renaming labels does not change the result
    train, train_labels, test, test_labels = near_clusters()
    names = torch.tensor([3, 10**9, 7, 2**40])
    expected = probe(train, train_labels, test, test_labels)
    assert probe(train, names[train_labels], test, names[test_labels]) == expected


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda a: knn_accuracy(*a, k=2.5), "k must be between 1 and the number"),
        (lambda a: knn_accuracy(*a, temperature=math.nan), "temperature must be a finite"),
        (lambda a: knn_accuracy(*a, temperature=math.inf), "temperature must be a finite"),
        (lambda a: linear_probe(*a, max_iter=2.5), "max_iter must be a positive int"),
        (lambda a: linear_probe(*a, weight_decay=math.nan), "weight_decay must be a finite"),
        (lambda a: linear_probe(*a, weight_decay=()), "weight_decay must be a finite"),
        (lambda a: linear_probe(*a, weight_decay=[1e-3, -1]), "weight_decay must be a finite"),
        (lambda a: linear_probe(*a, validation_fraction=1.0), "validation_fraction must"),
        (lambda a: extract_features(nn.Flatten(), a[0], batch_size=2.0), "batch_size must"),
    ],
)
def test_evaluation_rejects_bad_numbers_by_name(call, match) -> None:
    with pytest.raises(ValueError, match=match):
        call(near_clusters())


# --- dispersion -----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    k=st.integers(1, 6),
    d=st.integers(1, 8),
    log_scale=st.floats(-30, 30),
    seed=st.integers(0, 2**31 - 1),
)
def test_dispersion_of_identical_embeddings_is_zero(dtype, k, d, log_scale, seed) -> None:
    finfo = torch.finfo(dtype)
    one = torch.randn(3, 1, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    one = (one * 10.0**log_scale).clamp(-finfo.max, finfo.max).to(dtype)
    assert torch.equal(dispersion(one.expand(3, k, d)), torch.zeros(3, dtype=dtype))


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    spread=st.floats(0.0, 2.0),
    log_scale=st.floats(-30, 30),
    seed=st.integers(0, 2**31 - 1),
)
def test_dispersion_is_in_0_2_and_scale_invariant(dtype, spread, log_scale, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    steered = torch.randn(4, 1, 8, generator=g) + spread * torch.randn(4, 6, 8, generator=g)
    score = dispersion(steered.to(dtype))
    assert score.dtype == dtype and ((score >= 0) & (score <= 2)).all()
    finfo = torch.finfo(dtype)
    scale = min(max(10.0**log_scale, finfo.tiny * 1e6), finfo.max / 1e6)
    scaled = dispersion((steered.double() * scale).to(dtype))
    torch.testing.assert_close(scaled.float(), score.float(), rtol=0, atol=0.02)


def test_dispersion_of_nearly_identical_embeddings_in_float16_is_not_negative() -> None:
    g = torch.Generator().manual_seed(0)
    steered = torch.randn(64, 1, 32, generator=g) + 1e-3 * torch.randn(64, 8, 32, generator=g)
    assert (dispersion(steered.half()) >= 0).all()


# --- B12: datasets --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"hue_step": math.nan}, "hue_step must be a finite number"),
        ({"hue_step": math.inf}, "hue_step must be a finite number"),
        ({"hue_offset": math.inf}, "hue_offset must be a finite number"),
        ({"hue_offset": -math.inf}, "hue_offset must be a finite number"),
        ({"hue_offset": math.nan}, "hue_offset must be a finite number"),
        ({"saturation": math.nan}, "saturation must be in"),
        ({"num_hues": 2.5}, "num_hues must be an int"),
    ],
)
def test_tint_rejects_non_finite_and_non_integer_arguments(kwargs, match) -> None:
    arguments = {"num_hues": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        tint(torch.ones(2, 1, 2, 2), torch.tensor([0, 1]), **arguments)


def test_random_hue_labels_and_loader_reject_bad_types() -> None:
    with pytest.raises(ValueError, match="n must be an int"):
        random_hue_labels(2.5, 3)
    with pytest.raises(ValueError, match="num_hues must be an int"):
        random_hue_labels(3, 2.0)
    with pytest.raises(TypeError, match="sample must be True, False or None"):
        load_fashion_mnist("test", sample="yes")


# --- unclear errors: steering, TTA, heads ---------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"dim": None}, ValueError, r"dim must be a positive int \(the width D"),
        ({"param_dim": 18.0}, ValueError, "param_dim must be a positive int"),
        ({"hidden_dim": None}, ValueError, "hidden_dim must be a positive int"),
        ({"num_generators": 0}, ValueError, "num_generators must be a positive int"),
        ({"identity": [0.0] * 18}, TypeError, "identity must be a tensor"),
    ],
)
def test_steering_operator_names_bad_arguments(kwargs, error, match) -> None:
    arguments = {"dim": 8, "param_dim": 18, "kind": "exponential", **kwargs}
    with pytest.raises(error, match=match):
        SteeringOperator(**arguments)


def make_tta(**kwargs) -> SteeredTTA:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    params = tta_params(augment.byol(12, view=1), 4, 12, torch.Generator().manual_seed(0))
    return SteeredTTA(encoder, SteeringOperator(8, 18, rank=2, hidden_dim=8), params, **kwargs)


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"params": [[0.0] * 18]}, TypeError, r"params must be a tensor \(K, 18\)"),
        ({"params": torch.full((2, 18), math.nan)}, ValueError, "params must be finite"),
        ({"operator": nn.Linear(8, 8)}, TypeError, "operator must be a SteeringOperator"),
        ({"encoder": lambda x: x}, TypeError, "encoder must be an nn.Module"),
        ({"grad": 1}, TypeError, "grad must be a bool"),
    ],
)
def test_steered_tta_names_bad_arguments(change, error, match) -> None:
    arguments = {
        "encoder": nn.Flatten(),
        "operator": SteeringOperator(8, 18, rank=2, hidden_dim=8),
        "params": torch.zeros(2, 18),
        **change,
    }
    with pytest.raises(error, match=match):
        SteeredTTA(**arguments)
    with pytest.raises(TypeError, match="images must be a float tensor"):
        make_tta()([[0.0]])


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda aug: tta_params(aug, 4.0, (12, 12)), TypeError, "k must be an int >= 1"),
        (lambda aug: tta_params(aug, True, (12, 12)), TypeError, "k must be an int >= 1"),
        (lambda aug: tta_params(aug, 0, (12, 12)), ValueError, "k must be an int >= 1"),
        (lambda aug: tta_params(aug, 4, 12.5), TypeError, "image_size must be a positive int"),
        (lambda aug: tta_params(aug, 4, (12, 12.0)), TypeError, "image_size must be a posit"),
        (lambda aug: tta_params(aug, 4, (12,)), ValueError, "image_size must be a positive int"),
        (lambda aug: tta_params(aug, 4, (0, 12)), ValueError, "image_size must be a positive"),
        (lambda aug: tta_params(aug.ops, 4, 12), TypeError, "augment must be a ParamAugment"),
    ],
)
def test_tta_params_names_bad_arguments(call, error, match) -> None:
    with pytest.raises(error, match=match):
        call(augment.byol(12, view=1))


@pytest.mark.exactness
def test_tta_params_takes_an_int_for_square_images() -> None:
    aug = augment.byol(12, view=1)
    square = tta_params(aug, 8, 12, torch.Generator().manual_seed(3))
    assert torch.equal(square, tta_params(aug, 8, (12, 12), torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
def test_head_names_inputs_of_another_dtype(dtype: torch.dtype) -> None:
    head = EquivarianceHead(8, 5, hidden_dim=16, output_dim=4, param_embed_dim=4).eval()
    pattern = rf"features is {dtype} but the head's parameters are torch.float32"
    with pytest.raises(ValueError, match=pattern):
        head.project(torch.randn(3, 8, dtype=dtype))
    with pytest.raises(ValueError, match=rf"y_o is {dtype} but the head"):
        head.predict(torch.randn(3, 4, dtype=dtype), torch.randn(3, 5, dtype=dtype))
    with pytest.raises(ValueError, match=rf"features_o is {dtype} but the head"):
        head(*(torch.randn(*s, dtype=dtype) for s in [(3, 8), (2, 3, 8), (2, 3, 5)]))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast resolves bf16 vs float32
        assert head.project(torch.randn(3, 8, dtype=torch.bfloat16)).shape == (3, 4)


# --- memory ---------------------------------------------------------------------------------


def test_steered_tta_keeps_no_graph_unless_asked() -> None:
    images = torch.randn(2, 3, 12, 12)
    out = make_tta()(images)
    assert all(t.grad_fn is None and not t.requires_grad for t in out)
    assert make_tta().steer(torch.randn(2, 8, requires_grad=True)).steered.grad_fn is None
    with_grad = make_tta(grad=True)(images)
    assert all(t.requires_grad for t in with_grad)
    with_grad.score.sum().backward()


class _Allocations(TorchDispatchMode):
    """Records the byte sizes of the op outputs whose storage none of the inputs holds."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_leaves((args, kwargs or {}))
            if isinstance(t, Tensor)
        }
        for t in tree_leaves(out):
            if isinstance(t, Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.sizes.append(t.untyped_storage().nbytes())
        return out


@pytest.mark.exactness
def test_tta_params_draws_without_images() -> None:
    # same draws as sampling on K images, without allocating them (K 224 px images: 2 GB)
    aug, k, size = augment.byol(64, view=1), 64, (48, 64)
    with _Allocations() as allocations:
        params = tta_params(aug, k, size, torch.Generator().manual_seed(4))
    assert max(allocations.sizes) < k * 3 * size[0] * size[1] * 4 // 8
    images = torch.zeros(k, 3, *size)
    assert torch.equal(params, aug.sample(images, generator=torch.Generator().manual_seed(4)))


@pytest.mark.parametrize("kind", KINDS)
def test_steer_many_allocates_one_result_sized_buffer(kind: str) -> None:
    b, k, d = 64, 8, 16  # (B, K, D) larger than every other buffer (maps: K D^2, weights)
    op = operator(kind, dim=d, param_dim=5, rank=2, hidden_dim=4)
    g = torch.Generator().manual_seed(0)
    f, params = torch.randn(b, d, generator=g), torch.randn(k, 5, generator=g)
    with torch.no_grad(), _Allocations() as allocations:
        out = op.steer_many(f, params)
    assert sum(size >= b * k * d * 4 for size in allocations.sizes) == 1
    if kind == "low_rank":
        u, v = op._low_rank(params)
        expected = f[:, None] + torch.einsum("kdr,bkr->bkd", u, torch.einsum("kdr,bd->bkr", v, f))
    else:
        expected = torch.einsum("kij,bj->bki", op.maps(params), f)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
