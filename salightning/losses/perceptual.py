"""VGG19 perceptual loss (eq. 15) and the spatially adaptive perceptual loss of the poster.

The VGG is frozen, always in eval mode, and kept *out* of the module tree: it is not in
``state_dict()`` / ``parameters()`` of the loss nor of any parent (so it is not saved in
checkpoints, not wrapped by DDP, not re-initialised by a parent's ``apply``), while
``.to()`` / ``.cuda()`` / ``.half()`` still move it (``_apply`` is overridden).

Weights are never downloaded: ``weights="imagenet"`` reads torchvision's cache
(``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``), a path reads that file, and
``"random"`` (only when asked for) gives a randomly initialised network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

import torch
import torchvision
from torch import Tensor, nn

from salightning.checks import check_non_negative, check_same_shape, check_tensor
from salightning.edges import EdgeExtractor
from salightning.losses.distances import Distance, distance_penalty, weighted_distance
from salightning.checkpoints import load_state_dict_file
from salightning.weights import resolve_weights

__all__ = ["PerceptualLoss", "SAPerceptualLoss", "VGGFeatureExtractor", "vgg19_layer_names"]

#: ImageNet statistics torchvision's VGG19 was trained with, for inputs in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _meta_vgg19_features() -> nn.Sequential:
    # On the meta device: no memory, no 0.5 GB random init of the classifier we throw away.
    with torch.device("meta"):
        return torchvision.models.vgg19(weights=None).features


def vgg19_layer_names() -> list[str]:
    """Names of the layers of ``torchvision.models.vgg19().features``, in order.

    ``convB_J`` is the J-th convolution of block B (its output before the ReLU),
    ``reluB_J`` the same after the ReLU, ``poolB`` the max-pooling ending block B:
    ``["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1", "conv2_1", ..., "relu5_4", "pool5"]``.
    """
    names, block, conv = [], 1, 0
    for layer in _meta_vgg19_features():
        if isinstance(layer, nn.Conv2d):
            conv += 1
            names.append(f"conv{block}_{conv}")
        elif isinstance(layer, nn.ReLU):
            names.append(f"relu{block}_{conv}")
        else:
            names.append(f"pool{block}")
            block, conv = block + 1, 0
    return names


def _load_vgg19_features(num_layers: int, weights: str) -> nn.Sequential:
    """The first ``num_layers`` layers of VGG19 ``features``, frozen, in eval mode, on the CPU."""
    features = _meta_vgg19_features()[:num_layers].to_empty(device="cpu")
    if weights == "random":
        # torchvision's own VGG initialisation.
        for layer in features:
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(layer.bias)
    else:
        path = resolve_weights("vgg19", None if weights == "imagenet" else weights, option="weights", flag="--model.perceptual_loss.init_args.weights")
        state = load_state_dict_file(path)
        # torchvision's file holds the whole network ("features.0.weight", "classifier...");
        # a features-only state dict ("0.weight") is accepted too.
        if any(k.startswith("features.") for k in state):
            state = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        wanted = set(features.state_dict())
        missing = sorted(wanted - set(state))
        if missing:
            raise ValueError(
                f"weights file {str(path)!r} is not a torchvision VGG19 state dict: "
                f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}"
            )
        try:
            features.load_state_dict({k: state[k] for k in wanted})
        except RuntimeError as err:
            raise ValueError(f"weights file {str(path)!r} does not fit torchvision's VGG19: {err}") from err
    features.eval()
    features.requires_grad_(False)
    return features


class VGGFeatureExtractor(nn.Module):
    """Frozen torchvision VGG19 returning the feature maps of the named layers.

    The network is truncated after the last requested layer. Pre-activation features
    (``convB_J``) are cloned before torchvision's in-place ReLU overwrites them. The VGG is
    held outside the module tree (see the module docstring): this module has an empty
    ``state_dict()`` and no parameters, yet ``.to()`` / ``.half()`` move the VGG.

    Args:
        layers: a layer name or a list of them (see :func:`vgg19_layer_names`), e.g.
            "conv5_4" (ESRGAN: before activation), "relu2_2" / "relu5_4" (SRGAN VGG22 / VGG54).
        weights: "imagenet" (torchvision's cache), a path to a state dict file, or "random".
        normalize: apply ImageNet mean/std to inputs in [0, 1] (set False if already done).

    Shape:
        forward(x): x (B, 3, H, W) or (B, 1, H, W) (repeated to 3 channels), float in [0, 1]
        -> dict layer name -> (B, C_l, H_l, W_l), in the order of ``layers``.
    """

    _vgg: nn.Sequential

    def __init__(self, layers: list[str] | str = "conv5_4", weights: str = "imagenet", normalize: bool = True) -> None:
        super().__init__()
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        names = vgg19_layer_names()
        if not self.layers:
            raise ValueError("layers must name at least one VGG19 layer, got []")
        for name in self.layers:
            if name not in names:
                raise ValueError(f"layers: unknown VGG19 layer {name!r}; expected one of {names}")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers must not repeat a layer, got {self.layers}")
        if not isinstance(weights, str) or not weights:
            raise ValueError(f"weights must be 'imagenet', 'random' or a file path, got {weights!r}")
        self.weights = weights
        self.normalize = normalize
        self._index = {names.index(name): name for name in self.layers}
        # Plain attribute, not a registered child: see the module docstring.
        object.__setattr__(self, "_vgg", _load_vgg19_features(max(self._index) + 1, weights))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def vgg(self) -> nn.Sequential:
        """The truncated, frozen VGG19 ``features`` (not a registered submodule)."""
        return self._vgg

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Self:
        super()._apply(fn, recurse)
        self._vgg._apply(fn, recurse)
        return self

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        check_tensor(x, "x", ndim=4, channels=(1, 3))
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.normalize:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        feats: dict[str, Tensor] = {}
        layers = list(self._vgg)
        for i, layer in enumerate(layers):
            x = layer(x)
            if i in self._index:
                next_inplace = i + 1 < len(layers) and getattr(layers[i + 1], "inplace", False)
                feats[self._index[i]] = x.clone() if next_inplace else x
        return {name: feats[name] for name in self.layers}

    def extra_repr(self) -> str:
        return f"layers={self.layers}, weights={self.weights!r}, normalize={self.normalize}"


def _layer_weights(layer_weights: list[float] | None, layers: list[str]) -> list[float]:
    if layer_weights is None:
        return [1.0] * len(layers)
    weights = [float(w) for w in layer_weights]
    if len(weights) != len(layers):
        raise ValueError(f"layer_weights must have one weight per layer ({len(layers)}), got {layer_weights!r}")
    for w in weights:
        check_non_negative(w, "layer_weights")
    return weights


class PerceptualLoss(nn.Module):
    """VGG19 perceptual loss, eq. 15: ``sum_l lambda_l * mean(rho(phi_l(sr) - phi_l(hr)))``.

    ESRGAN: ``layers="conv5_4"`` (before activation), ``distance="l1"``.
    VSRResFeatGAN / the paper's eq. 15: ``distance="charbonnier"``.
    SRGAN (slides): VGG22 = "relu2_2", VGG54 = "relu5_4" (the slides' squared error is not
    offered: use L1 or Charbonnier). Each layer's term is a mean over its elements (as
    BasicSR), weighted by ``layer_weights`` and summed. The perceptual coefficient of the
    total loss (1 in ESRGAN, alpha2 in VSRResFeatGAN) is applied by the caller.

    Args:
        layers: VGG19 layer name(s), see :func:`vgg19_layer_names`.
        distance: "l1" (eq. 6) or "charbonnier" (eq. 7) with weight 1.
        weights: "imagenet" (torchvision's cache), a file path, or "random" (explicitly only).
        layer_weights: one non-negative weight per layer (default 1 each).
        eps: Charbonnier epsilon (> 0), used as ``sqrt(d^2 + eps^2)``.

    Shape:
        forward(sr, hr): (B, 3, H, W) each, float in [0, 1] -> () scalar. Gradients reach
        ``sr`` only; ``hr``'s features are computed without grad.
    """

    #: ``forward`` takes no ``edge_map`` (the trainer checks this flag).
    uses_edge_map = False

    def __init__(
        self,
        layers: list[str] | str = "conv5_4",
        distance: Distance = "l1",
        weights: str = "imagenet",
        layer_weights: list[float] | None = None,
        eps: float = 1e-3,
    ) -> None:
        super().__init__()
        distance_penalty(distance, eps)  # validate before the (slow) VGG construction
        self.distance = distance
        self.eps = float(eps)
        layer_list = [layers] if isinstance(layers, str) else list(layers)
        self.layer_weights = _layer_weights(layer_weights, layer_list)
        self.feature_extractor = VGGFeatureExtractor(layer_list, weights)

    @property
    def layers(self) -> list[str]:
        return self.feature_extractor.layers

    def _features(self, sr: Tensor, hr: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        check_tensor(sr, "sr", ndim=4)
        check_tensor(hr, "hr", ndim=4)
        check_same_shape(sr, hr, "sr", "hr")
        sr_feats = self.feature_extractor(sr)
        with torch.no_grad():
            hr_feats = self.feature_extractor(hr.detach())
        return sr_feats, hr_feats

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        sr_feats, hr_feats = self._features(sr, hr)
        return sum(
            lw * weighted_distance(sr_feats[n], hr_feats[n], 1.0, self.distance, self.eps)
            for n, lw in zip(self.layers, self.layer_weights, strict=True)
        )

    def extra_repr(self) -> str:
        return f"distance={self.distance!r}, eps={self.eps}, layer_weights={self.layer_weights}"


class SAPerceptualLoss(PerceptualLoss):
    """Spatially adaptive perceptual loss (poster): ``gamma_w(VGG(x), VGG(G(Y)), alpha + beta * VGG(W(x)))``.

    For each layer l: ``lambda_l * mean((alpha + beta * M_l) * rho(phi_l(sr) - phi_l(hr)))``,
    summed over layers (means, not sums: see :mod:`salightning.losses.distances`).

    How "VGG(W(x))" becomes a weight map ``M_l`` (B, C_l, H_l, W_l) in [0, 1]: the edge map
    ``W(hr)`` (in [0, 1], repeated to 3 channels if it has one) goes through the same frozen
    VGG as an image would, and so does an all-zero image; for each sample b and channel c::

        R_l = |phi_l(W) - phi_l(0)|,   M_l[b, c] = max(W[b]) * R_l[b, c] / max_{h,w} R_l[b, c]

    * Subtracting ``phi_l(0)`` (the response to "no edge anywhere", biases and border effects
      included) makes ``M_l`` vanish (up to rounding) wherever the layer's receptive field
      contains no edge, as ``W`` vanishes on flat areas;
    * the absolute value makes it non-negative whatever the sign of the (pre-activation)
      features;
    * dividing by the channel's spatial maximum puts every channel on the scale of ``W``, so
      ``beta`` plays the same role as in the SA pixel loss; the factor ``max(W[b])`` keeps a
      nearly flat sample (all ``W`` small) from having its faint texture blown up to weight 1.

    ``M_l`` is computed without grad. With ``beta == 0`` (or no edge map) this is ``alpha``
    times :class:`PerceptualLoss`, and the two extra VGG passes are skipped.

    Args:
        alpha: weight of the plain term (>= 0).
        beta: weight of the edge term (>= 0).
        edge_extractor: computes ``W(hr)``; when None, ``forward`` uses the given ``edge_map``.
        layers, distance, weights, layer_weights, eps: as :class:`PerceptualLoss`
            (``distance`` defaults to the poster's Charbonnier).

    Shape:
        forward(sr, hr, edge_map=None): sr, hr (B, 3, H, W) in [0, 1]; edge_map (B, 3 or 1, H, W)
        in [0, 1] -> () scalar.
    """

    uses_edge_map = True

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 0.0,
        edge_extractor: EdgeExtractor | None = None,
        layers: list[str] | str = "conv5_4",
        distance: Distance = "charbonnier",
        weights: str = "imagenet",
        layer_weights: list[float] | None = None,
        eps: float = 1e-3,
    ) -> None:
        self_alpha = float(check_non_negative(float(alpha), "alpha"))
        self_beta = float(check_non_negative(float(beta), "beta"))
        super().__init__(layers, distance, weights, layer_weights, eps)
        self.alpha, self.beta = self_alpha, self_beta
        self.edge_extractor = edge_extractor

    def feature_weight_maps(self, edge_map: Tensor) -> dict[str, Tensor]:
        """The weight maps ``M_l`` of "VGG(W(x))" (see the class docstring).

        Args:
            edge_map: (B, 1 or 3, H, W) float in [0, 1].

        Returns:
            dict layer name -> (B, C_l, H_l, W_l) in [0, 1], without grad.
        """
        check_tensor(edge_map, "edge_map", ndim=4, channels=(1, 3))
        with torch.no_grad():
            w = edge_map.detach().expand(-1, 3, -1, -1)
            w = w.to(self.feature_extractor.mean.dtype)
            batch = w.shape[0]
            feats = self.feature_extractor(torch.cat([w, w.new_zeros((1, *w.shape[1:]))]))
            w_peak = w.float().amax(dim=(1, 2, 3)).view(batch, 1, 1, 1)
            maps = {}
            for name, f in feats.items():
                response = (f[:batch] - f[batch:]).abs().float()
                peak = response.amax(dim=(-2, -1), keepdim=True)
                maps[name] = w_peak * response / peak.clamp_min(torch.finfo(torch.float32).tiny)
            return maps

    def forward(self, sr: Tensor, hr: Tensor, edge_map: Tensor | None = None) -> Tensor:
        sr_feats, hr_feats = self._features(sr, hr)
        maps = None
        if self.beta > 0:
            if edge_map is None and self.edge_extractor is not None:
                with torch.no_grad():
                    edge_map = self.edge_extractor(hr.detach())
            if edge_map is not None:
                if edge_map.shape[0] != sr.shape[0] or edge_map.shape[-2:] != sr.shape[-2:]:
                    raise ValueError(
                        f"edge_map must have the batch and spatial size of sr {tuple(sr.shape)}, "
                        f"got {tuple(edge_map.shape)}"
                    )
                maps = self.feature_weight_maps(edge_map)
        total = sr_feats[self.layers[0]].new_zeros((), dtype=torch.float32)
        for name, lw in zip(self.layers, self.layer_weights, strict=True):
            h = self.alpha if maps is None else self.alpha + self.beta * maps[name]
            total = total + lw * weighted_distance(sr_feats[name], hr_feats[name], h, self.distance, self.eps)
        return total

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, " + super().extra_repr()
