"""PyTorch models: ``cnn`` (LeNet-5 size), ``cnn-large`` (32/64 channels), ``torch-mlp``.

torch is imported only inside ``build`` / ``fit`` / ``predict_proba`` (and in ``bind`` when
``device: cuda`` is asked for): ``import torch`` costs ~4 s and ~0.8 GB per process, and only
the cells that train a torch model may pay it. ``bench.models`` imports this module to register the
specs; nothing here imports torch at module level.

The trainer is a plain loop over in-memory tensors (no DataLoader workers): the rows are put on
the device once, each epoch draws a permutation from a ``torch.Generator`` seeded by ``build``'s
seed, and the loss is the soft-target cross-entropy, so ``label_smoothing`` targets (n×k) are
used as they are (hard labels go in as class indices: the same loss, computed faster). Weight
init and dropout run under ``torch.random.fork_rng`` seeded from the same seed: fits are
deterministic on CPU and the caller's global torch RNG is left untouched.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from bench.core.types import DatasetInfo, ParamError, PoisonBenchError, check_range
from bench.models.base import MODELS, Estimator, ModelSpec
from defenses.robust_loss import robust_loss

#: image datasets shipped with the harness (named in the error for a CNN on tabular data)
IMAGE_DATASETS = "mnist-5k, mnist, fashion-mnist"
_PREDICT_BATCH = 2048


def configure_threads() -> None:
    """Set torch's intra-op threads from ``POISONBENCH_THREADS`` (set by the local executor to
    one per worker process); leave torch's default when it is unset."""
    import torch

    threads = os.environ.get("POISONBENCH_THREADS")
    if threads and int(threads) > 0 and torch.get_num_threads() != int(threads):
        torch.set_num_threads(int(threads))


def resolve_device(device: str, field: str = "device") -> Any:
    """The ``torch.device`` for ``auto`` (cuda when available, else cpu), ``cpu`` or ``cuda``.

    Raises ParamError naming ``field`` when ``cuda`` is asked for and torch sees no CUDA device.
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        build = torch.version.cuda or "CPU-only"
        raise ParamError(
            field,
            f"'cuda' was asked for but torch {torch.__version__} ({build} build) sees no CUDA "
            "device; use 'auto' (cuda when available, else cpu) or 'cpu'",
        )
    return torch.device(device)


@dataclass(frozen=True)
class TorchModel(ModelSpec):
    """Common parameters of the torch models (all take ``gce``, ``sce``, ``glc``, ``dp_sgd``).

    epochs: passes over the training set, 1..10000. batch_size: rows per step, 1..1000000.
    optimizer: ``adam`` or ``sgd`` (momentum 0.9). lr: learning rate, in (0, 10].
    weight_decay: L2 penalty, in [0, 10]. device: ``auto`` (cuda when available), ``cpu`` or ``cuda``.
    """

    epochs: int = 5
    batch_size: int = 64
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    device: Literal["auto", "cpu", "cuda"] = "auto"

    supports_loss: ClassVar[bool] = True  # fit(..., loss=, trusted=) trains with gce / sce / glc
    supports_privacy: ClassVar[bool] = True  # fit(..., privacy=) trains with DP-SGD (dp_sgd)
    supports_representation: ClassVar[bool] = True  # features(X): the penultimate layer
    #: train image batches in channels-last memory layout (measured per network on one CPU
    #: thread: faster for LeNet-size convolutions, slower for cnn-large)
    channels_last: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_range(self.epochs, "epochs", 1, 10_000)
        check_range(self.batch_size, "batch_size", 1, 1_000_000)
        check_range(self.lr, "lr", 0, 10, low_open=True)
        check_range(self.weight_decay, "weight_decay", 0, 10)

    def bind(self, info: DatasetInfo, path: str = "") -> TorchModel:
        """Check the dataset's input shape and, for ``device: cuda``, that CUDA is there."""
        prefix = f"{path}." if path else ""
        self.check_input(info, prefix)
        if self.device == "cuda":  # only then is torch imported at grid expansion
            resolve_device(self.device, f"{prefix}device")
        return self

    def check_input(self, info: DatasetInfo, prefix: str) -> None:
        """Raise ParamError when the network cannot take this dataset's rows."""

    def network(self, info: DatasetInfo) -> Any:
        """A fresh ``torch.nn.Module`` mapping a batch of rows to n×k logits."""
        raise NotImplementedError

    def build(self, info: DatasetInfo, seed: int) -> Estimator:
        self.check_input(info, "")
        return TorchClassifier(self, info, seed)


class TorchClassifier:
    """A torch network trained by the in-memory loop; ``predict_proba`` gives n×k softmax."""

    def __init__(self, spec: TorchModel, info: DatasetInfo, seed: int) -> None:
        self.spec = spec
        self.info = info
        self.seed = int(seed)

    def _inputs(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        if self.info.image_shape is not None and X.ndim == 2:
            X = X.reshape(len(X), *self.info.image_shape)
        return np.ascontiguousarray(X)

    def fit(
        self,
        X: np.ndarray,
        targets: np.ndarray,
        sample_weight: np.ndarray | None = None,
        loss: dict[str, Any] | None = None,
        trusted: np.ndarray | None = None,
        privacy: dict[str, Any] | None = None,
    ) -> TorchClassifier:
        """Train from scratch on rows ``X``, hard labels (n) or soft targets (n×k); returns self.

        sample_weight (n, >= 0) weights each row's loss; weights are rescaled to mean 1, so
        uniform weights give the plain mean loss. loss: a robust loss set by a defense step
        (``TrainingSet.loss``, e.g. ``{"name": "gce", "q": 0.7}``) used instead of the
        soft-target cross-entropy; see ``defenses/robust_loss.py``. trusted (n, bool): the rows
        from the clean pool, passed to the loss (``glc`` trains them with plain cross-entropy).
        privacy: differential-privacy options set by ``dp_sgd`` (``TrainingSet.privacy``): the
        fit then runs DP-SGD (see :meth:`_fit_private`) and records the achieved ε in
        ``fit_info_``.
        """
        import torch
        import torch.nn.functional as F

        configure_threads()
        spec = self.spec
        self.device_ = device = resolve_device(spec.device)
        self.fit_info_: dict[str, float] = {}
        n, k = len(X), self.info.n_classes
        if n == 0:
            raise PoisonBenchError("cannot train a torch model on 0 rows")
        targets = np.asarray(targets)
        if targets.ndim == 1:
            # Hard labels as class indices: the same loss as one-hot soft targets, ~8% faster
            # for LeNet on one CPU thread (measured), which the 0.9×-of-a-bare-loop goal needs.
            T_t = torch.from_numpy(targets.astype(np.int64)).to(device)
        else:
            if targets.shape != (n, k):
                raise PoisonBenchError(f"soft targets must be {n}×{k}, got {targets.shape}")
            T_t = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32)).to(device)
        X_t = torch.from_numpy(self._inputs(X)).to(device)
        W_t = None
        if sample_weight is not None:
            w = np.asarray(sample_weight, dtype=np.float64)
            if not np.allclose(w, w[0]):
                W_t = torch.from_numpy((w / w.mean()).astype(np.float32)).to(device)

        loss_spec, robust, trusted_t = loss, None, None
        if loss_spec is not None:
            robust = robust_loss
            if trusted is not None:
                if len(trusted) != n:
                    raise PoisonBenchError(f"trusted must have {n} rows, got {len(trusted)}")
                trusted_t = torch.from_numpy(np.asarray(trusted, dtype=bool)).to(device)

        channels_last = spec.channels_last and X_t.ndim == 4
        if channels_last:
            X_t = X_t.contiguous(memory_format=torch.channels_last)

        def rows_loss(net: Any, x: Any, t: Any, w: Any, tr: Any) -> Any:
            """The mean loss of one batch (rows x, targets t, weights w, trusted flags tr)."""
            logits = net(x)
            if robust is not None:
                per_row = robust(logits, t, loss_spec, trusted=tr)
                return per_row.mean() if w is None else (per_row * w).mean()
            if w is None:
                return F.cross_entropy(logits, t)
            return (F.cross_entropy(logits, t, reduction="none") * w).mean()

        def take(tensor: Any, idx: Any) -> Any:
            return None if tensor is None else tensor[idx]

        def batch_loss(net: Any, idx: Any) -> Any:
            return rows_loss(net, X_t[idx], T_t[idx], take(W_t, idx), take(trusted_t, idx))

        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            net = spec.network(self.info).to(device)
            if channels_last:
                net = net.to(memory_format=torch.channels_last)
            self.prepare(net, X_t)
            # A fused optimizer step (one kernel for all parameters) saves per-tensor overhead
            # on small networks; Opacus wraps the plain optimizer, so private fits keep it.
            fused = {"fused": True} if privacy is None else {}
            if spec.optimizer == "adam":
                opt = torch.optim.Adam(
                    net.parameters(), lr=spec.lr, weight_decay=spec.weight_decay, **fused
                )
            else:
                opt = torch.optim.SGD(
                    net.parameters(),
                    lr=spec.lr,
                    momentum=0.9,
                    weight_decay=spec.weight_decay,
                    **fused,
                )
            gen = torch.Generator().manual_seed(self.seed)
            net.train()
            bs = spec.batch_size
            if privacy is not None:
                self.fit_info_ = self._fit_private(net, opt, n, batch_loss, gen, privacy)
            else:
                for _ in range(spec.epochs):
                    order = torch.randperm(n, generator=gen).to(device)
                    # One gather per epoch, then contiguous slices: cheaper than gathering
                    # every batch (the rows and the order are the same either way).
                    x_e = X_t[order]
                    if channels_last:
                        x_e = x_e.contiguous(memory_format=torch.channels_last)
                    t_e, w_e, tr_e = T_t[order], take(W_t, order), take(trusted_t, order)
                    for start in range(0, n, bs):
                        part = slice(start, start + bs)
                        loss_value = rows_loss(
                            net, x_e[part], t_e[part], take(w_e, part), take(tr_e, part)
                        )
                        opt.zero_grad(set_to_none=True)
                        loss_value.backward()
                        opt.step()
        net.train(False)  # inference mode: dropout off
        self.net_ = net
        return self

    def _fit_private(
        self,
        net: Any,
        opt: Any,
        n: int,
        batch_loss: Callable[[Any, Any], Any],
        gen: Any,
        privacy: dict[str, Any],
    ) -> dict[str, float]:
        """Train ``net`` in place with DP-SGD (Opacus); returns what the fit measured.

        Each step takes a Poisson sample of the rows (each row independently with probability
        ``q = batch_size / n``), clips every row's gradient to ``max_grad_norm`` and adds
        Gaussian noise of std ``noise_multiplier × max_grad_norm`` (Opacus ``GradSampleModule``
        + ``DPOptimizer``); ``round(n / batch_size)`` steps make an epoch. Poisson sampling is
        what the RDP accountant's guarantee assumes (shuffled fixed-size batches would
        understate ε). The sampling and the noise come from generators seeded by the model
        seed, so a fit is repeatable on CPU (Opacus' ``secure_mode`` is off: the noise is not
        from a cryptographic generator). A target ``epsilon`` is turned into the noise
        multiplier that reaches it after all steps (Opacus ``get_noise_multiplier``, RDP).
        Caveat: the torch-mlp's input standardization is computed from the training rows
        without noise, so the guarantee covers the training steps, not those statistics.

        Returns ``dp_epsilon`` (ε achieved at ``dp_delta``, RDP accountant),
        ``dp_noise_multiplier``, ``dp_delta``, ``dp_sample_rate`` and ``dp_steps``.
        """
        try:
            from opacus.accountants import RDPAccountant
            from opacus.accountants.utils import get_noise_multiplier
            from opacus.grad_sample import GradSampleModule
            from opacus.optimizers import DPOptimizer
        except ImportError as exc:  # an optional extra: say how to get it
            raise PoisonBenchError(
                "dp_sgd needs opacus: pip install 'poisonbench[dp]' (or pip install opacus)"
            ) from exc
        import torch

        device = self.device_
        spec = self.spec
        q = min(1.0, spec.batch_size / n)
        steps_per_epoch = max(1, round(n / spec.batch_size))
        total = steps_per_epoch * spec.epochs
        delta = float(privacy["delta"])
        sigma = privacy.get("noise_multiplier")
        if sigma is None:
            sigma = get_noise_multiplier(
                target_epsilon=float(privacy["epsilon"]),
                target_delta=delta,
                sample_rate=q,
                steps=total,
                accountant="rdp",
            )
        sigma = float(sigma)
        model = GradSampleModule(net, loss_reduction="mean")
        noise = torch.Generator(device=device).manual_seed(self.seed + 1)
        dp_opt = DPOptimizer(
            opt,
            noise_multiplier=sigma,
            max_grad_norm=float(privacy["max_grad_norm"]),
            expected_batch_size=max(1, round(q * n)),
            generator=noise,
        )
        accountant = RDPAccountant()
        with warnings.catch_warnings():
            # Opacus' hooks on a first layer whose input needs no gradient: harmless, every step.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for _ in range(total):
                idx = torch.nonzero(torch.rand(n, generator=gen) < q).squeeze(1).to(device)
                dp_opt.zero_grad(set_to_none=True)
                if len(idx):
                    batch_loss(model, idx).backward()
                else:  # an empty Poisson sample still takes its (noise-only) step
                    for p in dp_opt.params:
                        p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
                dp_opt.step()
                accountant.step(noise_multiplier=sigma, sample_rate=q)
        model.remove_hooks()
        for p in net.parameters():  # per-row gradients are training state, not the model
            for name in ("grad_sample", "summed_grad"):
                if hasattr(p, name):
                    delattr(p, name)
        return {
            "dp_epsilon": float(accountant.get_epsilon(delta=delta)),
            "dp_noise_multiplier": sigma,
            "dp_delta": delta,
            "dp_sample_rate": float(q),
            "dp_steps": float(total),
        }

    def prepare(self, net: Any, X: Any) -> None:
        """Fit input statistics the network needs (the MLP's standardization) on the train rows."""
        if hasattr(net, "set_scaling"):
            net.set_scaling(X)

    def features(self, X: np.ndarray) -> np.ndarray:
        """The penultimate-layer representation of rows ``X``: n×h float64 on the CPU.

        A network with its own ``features(x)`` method (a ``torch`` model by import path may
        define one) gives that; otherwise it is the input of the network's last
        ``nn.Linear`` layer (the classifier head), caught by a forward hook: for ``cnn`` the
        84 units after the second fully connected layer's ReLU, for ``cnn-large`` the 128,
        for ``torch-mlp`` the last hidden layer.
        """
        import torch
        from torch import nn

        configure_threads()
        net = self.net_
        own = getattr(type(net), "features", None)
        head = None
        if not callable(own):
            linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
            if not linears:
                raise PoisonBenchError(
                    f"{type(net).__name__} has no nn.Linear layer and no features(x) method: "
                    "no penultimate layer to read"
                )
            head = linears[-1]
        out: list[np.ndarray] = []
        caught: list[Any] = []
        hook = (
            None
            if head is None
            else head.register_forward_pre_hook(lambda _m, args: caught.append(args[0]))
        )
        try:
            with torch.inference_mode():
                for start in range(0, len(X), _PREDICT_BATCH):
                    batch = torch.from_numpy(self._inputs(X[start : start + _PREDICT_BATCH]))
                    batch = batch.to(self.device_)
                    if head is None:
                        rep = net.features(batch)
                    else:
                        caught.clear()
                        net(batch)
                        rep = caught[-1]
                    out.append(rep.float().reshape(len(batch), -1).cpu().numpy())
        finally:
            if hook is not None:
                hook.remove()
        if not out:
            return np.zeros((0, 0))
        return np.concatenate(out).astype(np.float64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, n×k float64 on the CPU (softmax of the logits)."""
        import torch

        configure_threads()
        out = []
        with torch.inference_mode():
            for start in range(0, len(X), _PREDICT_BATCH):
                batch = torch.from_numpy(self._inputs(X[start : start + _PREDICT_BATCH]))
                logits = self.net_(batch.to(self.device_))
                out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        if not out:
            return np.zeros((0, self.info.n_classes))
        return np.concatenate(out).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# Networks (built inside ``network`` so that torch is imported only there)
# ---------------------------------------------------------------------------------------------


def _require_images(name: str, info: DatasetInfo, prefix: str) -> None:
    if info.image_shape is None or len(info.image_shape) != 3:
        raise ParamError(
            f"{prefix}name" if prefix else "model",
            f"{name} needs image data (n×c×h×w) but {info.name} is tabular; use an image "
            f"dataset ({IMAGE_DATASETS}) or a model that takes flat rows (torch-mlp, logreg, "
            "mlp, random_forest, svm)",
        )


def _flat_size(features: Any, shape: tuple[int, ...]) -> int:
    import torch

    with torch.no_grad():
        return int(features(torch.zeros(1, *shape)).numel())


class ImageModel(TorchModel):
    """A torch model that needs images (n×c×h×w) of at least ``min_side`` pixels a side."""

    min_side: ClassVar[int] = 1

    def check_input(self, info: DatasetInfo, prefix: str) -> None:
        _require_images(self.name, info, prefix)
        _c, h, w = info.image_shape  # type: ignore[misc]
        if min(h, w) < self.min_side:
            raise ParamError(
                f"{prefix}name" if prefix else "model",
                f"{self.name} needs images of at least {self.min_side}×{self.min_side}, "
                f"{info.name} has {h}×{w}",
            )


@MODELS.register("cnn")
@dataclass(frozen=True)
class CNN(ImageModel):
    """LeNet-5-size CNN: conv 6 (5×5) → pool → conv 16 (5×5) → pool → 120 → 84 → k. Images only."""

    min_side: ClassVar[int] = 12  # the two 5×5 convolutions and pools need 12×12
    channels_last: ClassVar[bool] = True

    def network(self, info: DatasetInfo) -> Any:
        from torch import nn

        c = info.image_shape[0]  # type: ignore[index]
        features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = _flat_size(features, info.image_shape)  # type: ignore[arg-type]
        return nn.Sequential(
            features,
            nn.Linear(flat, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, info.n_classes),
        )


@MODELS.register("cnn-large")
@dataclass(frozen=True)
class CNNLarge(ImageModel):
    """The classic PyTorch MNIST example: conv 32 → conv 64 (3×3) → pool → dropout → 128 → k."""

    min_side: ClassVar[int] = 6

    def network(self, info: DatasetInfo) -> Any:
        from torch import nn

        c = info.image_shape[0]  # type: ignore[index]
        features = nn.Sequential(
            nn.Conv2d(c, 32, 3),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(0.25),
            nn.Flatten(),
        )
        flat = _flat_size(features, info.image_shape)  # type: ignore[arg-type]
        return nn.Sequential(
            features,
            nn.Linear(flat, 128),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(128, info.n_classes),
        )


@MODELS.register("torch-mlp")
@dataclass(frozen=True)
class TorchMLP(TorchModel):
    """Standardized, flattened rows → ReLU hidden layers → k. Tabular data or images.

    hidden: sizes of the hidden layers (1 to 100 layers, each 1..100000).
    """

    hidden: tuple[int, ...] = (256,)

    def __post_init__(self) -> None:
        super().__post_init__()
        if (
            not self.hidden
            or len(self.hidden) > 100
            or any(not 1 <= h <= 100_000 for h in self.hidden)
        ):
            raise ParamError(
                "hidden",
                f"must be a list of 1 to 100 layer sizes in [1, 100000], got {list(self.hidden)}",
            )

    def network(self, info: DatasetInfo) -> Any:
        import torch
        from torch import nn

        class _MLP(nn.Module):
            def __init__(self, d: int, hidden: tuple[int, ...], k: int) -> None:
                super().__init__()
                layers: list[nn.Module] = []
                for h in hidden:
                    layers += [nn.Linear(d, h), nn.ReLU()]
                    d = h
                layers.append(nn.Linear(d, k))
                self.layers = nn.Sequential(*layers)
                self.register_buffer("mean", torch.zeros(info.n_features))
                self.register_buffer("scale", torch.ones(info.n_features))

            def set_scaling(self, X: torch.Tensor) -> None:
                flat = X.reshape(len(X), -1)
                std = flat.std(dim=0, unbiased=False)
                self.mean = flat.mean(dim=0)
                self.scale = torch.where(std > 1e-6, std, torch.ones_like(std))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.layers((x.reshape(len(x), -1) - self.mean) / self.scale)

        return _MLP(info.n_features, self.hidden, info.n_classes)
