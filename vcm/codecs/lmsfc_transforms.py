"""L-MSFC's analysis and synthesis transforms: FENet (P2..P5 -> ``y``) and DRNet (``y_hat`` -> P2..P5).

:class:`DRNet` is the decoder of the source's code; :class:`DRNetLight` is a lighter decoder (plain
upsampling branches at ``N`` channels mixed at ``N`` channels, then 1x1 convolutions to the feature
channels) kept as the ``light`` variant of :class:`vcm.codecs.lmsfc.LMSFC`.
"""
from __future__ import annotations

import torch
from compressai.layers import (
    AttentionBlock,
    ResidualBlock,
    ResidualBlockUpsample,
    ResidualBlockWithStride,
    conv1x1,
    conv3x3,
    subpel_conv3x3,
)
from torch import Tensor, nn

__all__ = ["DRNet", "DRNetLight", "FENet"]


class FENet(nn.Module):
    """Fusion and encoding network: P2..P5 -> latent ``y``.

    .. code-block:: none

        P2 ─ RBS ─ RB ─(A)─┐
                      P3 ─ cat ─ RBS ─ A ─ RB ─┐
                                          P4 ─ cat ─ RBS ─ RB ─(A)─┐
                                                              P5 ─ cat ─ conv3x3/2 ─ A ── y

        RBS = ResidualBlockWithStride (stride 2), RB = ResidualBlock, A = AttentionBlock,
        (A) = only with ``attention_every_stage`` (TA-MSF).

    Args:
        N: channels of the fusion stages (the source fuses at ``N = M``).
        M: channels of ``y``.
        attention_every_stage: add an attention block to the stages that have none (TA-MSF).
        feature_channels: channels of each FPN level.
    """

    def __init__(
        self, N: int, M: int, attention_every_stage: bool = False, feature_channels: int = 256
    ):
        super().__init__()
        F_ = feature_channels
        self.stage2 = nn.Sequential(
            ResidualBlockWithStride(F_, N),
            ResidualBlock(N, N),
            *([AttentionBlock(N)] if attention_every_stage else []),
        )
        self.stage3 = nn.Sequential(
            ResidualBlockWithStride(N + F_, N),
            AttentionBlock(N),
            ResidualBlock(N, N),
        )
        self.stage4 = nn.Sequential(
            ResidualBlockWithStride(N + F_, N),
            ResidualBlock(N, N),
            *([AttentionBlock(N)] if attention_every_stage else []),
        )
        self.stage5 = nn.Sequential(conv3x3(N + F_, M, stride=2), AttentionBlock(M))

    def forward(self, p2: Tensor, p3: Tensor, p4: Tensor, p5: Tensor) -> Tensor:
        """Fuses padded levels into ``y``.

        Args:
            p2: [B,F,H,W] with H, W multiples of 64; p3 [B,F,H/2,W/2]; p4 [B,F,H/4,W/4];
                p5 [B,F,H/8,W/8].

        Returns:
            y: [B,M,H/16,W/16].
        """
        x = self.stage2(p2)
        x = self.stage3(torch.cat([x, p3], dim=1))
        x = self.stage4(torch.cat([x, p4], dim=1))
        return self.stage5(torch.cat([x, p5], dim=1))


class _FeatureMixing(nn.Module):
    """Joins a finer level into the next coarser one: ``coarse + conv3x3([conv5x5/2(fine), coarse])``."""

    def __init__(self, N: int):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(N, N, 5, stride=2, padding=2), nn.LeakyReLU(inplace=True))
        self.fuse = nn.Sequential(nn.Conv2d(2 * N, N, 3, padding=1), nn.LeakyReLU(inplace=True))

    def forward(self, fine: Tensor, coarse: Tensor) -> Tensor:
        return coarse + self.fuse(torch.cat([self.down(fine), coarse], dim=1))


def _branch(M: int, N: int, out_channels: int, upsamplings: int) -> nn.Sequential:
    """One DRNet branch: per x2 stage a residual block then an upsampling block.

    An attention block precedes the third stage (so only the P3 and P2 branches have one), and the
    fourth stage (P2 only) upsamples with a plain sub-pixel convolution; the last stage outputs
    ``out_channels``.
    """
    layers: list[nn.Module] = []
    for i in range(upsamplings):
        if i == 2:
            layers.append(AttentionBlock(N))
        layers.append(ResidualBlock(M if i == 0 else N, N))
        out = out_channels if i == upsamplings - 1 else N
        layers.append(subpel_conv3x3(N, out, 2) if i == 3 else ResidualBlockUpsample(N, out, 2))
    return nn.Sequential(*layers)


class DRNet(nn.Module):
    """Decoding and reconstruction network of the source: ``y_hat`` -> P2..P5.

    .. code-block:: none

                      ┌─ RB RBU RB RBU A RB RBU RB SP ──────────────── P2   (x16)
                      │                                                │ FM
        y_hat ─ A ────┼─ RB RBU RB RBU A RB RBU ──────────────── b3 ── P3   (x8)
                      │                                                │ FM
                      ├─ RB RBU RB RBU ───────────────────────── b4 ── P4   (x4)
                      │                                                │ FM
                      └─ RB RBU ──────────────────────────────── b5 ── P5   (x2)

        A = AttentionBlock, RB = ResidualBlock, RBU = ResidualBlockUpsample (x2), SP = sub-pixel
        conv3x3 (x2); the last block of each branch outputs the F feature channels.
        FM = feature mixing at F channels: P_{l+1} = b_{l+1} + conv3x3_{2F->F}([conv5x5/2(P_l), b_{l+1}]).

    Args:
        N: channels of the branches (the source uses ``N = M``).
        M: channels of ``y_hat``.
        feature_channels: channels of each output level.
    """

    def __init__(self, N: int, M: int, feature_channels: int = 256):
        super().__init__()
        F_ = feature_channels
        self.attention = AttentionBlock(M)
        self.branch2 = _branch(M, N, F_, 4)
        self.branch3 = _branch(M, N, F_, 3)
        self.branch4 = _branch(M, N, F_, 2)
        self.branch5 = _branch(M, N, F_, 1)
        self.mix3 = _FeatureMixing(F_)
        self.mix4 = _FeatureMixing(F_)
        self.mix5 = _FeatureMixing(F_)

    def forward(self, y_hat: Tensor) -> list[Tensor]:
        """Rebuilds the padded levels.

        Args:
            y_hat: [B,M,h,w].

        Returns:
            ``[p2, p3, p4, p5]`` of sizes [B,F,16h,16w], [B,F,8h,8w], [B,F,4h,4w], [B,F,2h,2w].
        """
        y = self.attention(y_hat)
        p2 = self.branch2(y)
        p3 = self.mix3(p2, self.branch3(y))
        p4 = self.mix4(p3, self.branch4(y))
        p5 = self.mix5(p4, self.branch5(y))
        return [p2, p3, p4, p5]


class DRNetLight(nn.Module):
    """A lighter decoder: upsampling-only branches, mixed at ``N`` channels, 1x1 convs to F channels.

    .. code-block:: none

                      ┌─ RBU ─ RBU ─ RBU ─ RBU ─────────────── m2 ─ conv1x1 ─ P2   (x16)
                      │                                         │ FM
        y_hat ─ A ────┼─ RBU ─ RBU ─ RBU ─────────────── b3 ── m3 ─ conv1x1 ─ P3   (x8)
                      │                                         │ FM
                      ├─ RBU ─ RBU ─────────────────────── b4 ── m4 ─ conv1x1 ─ P4   (x4)
                      │                                         │ FM
                      └─ RBU ───────────────────────────── b5 ── m5 ─ conv1x1 ─ P5   (x2)

        A = AttentionBlock, RBU = ResidualBlockUpsample (x2, sub-pixel convolutions),
        FM = feature mixing: m_{l+1} = b_{l+1} + conv3x3_{2N->N}([conv5x5/2(m_l), b_{l+1}]).

    Args:
        N: channels of the branches and of the mixing.
        M: channels of ``y_hat``.
        feature_channels: channels of each output level.
    """

    def __init__(self, N: int, M: int, feature_channels: int = 256):
        super().__init__()
        self.attention = AttentionBlock(M)

        def branch(stages: int) -> nn.Sequential:
            return nn.Sequential(
                ResidualBlockUpsample(M, N, 2),
                *[ResidualBlockUpsample(N, N, 2) for _ in range(stages - 1)],
            )

        self.branch2 = branch(4)
        self.branch3 = branch(3)
        self.branch4 = branch(2)
        self.branch5 = branch(1)
        self.mix3 = _FeatureMixing(N)
        self.mix4 = _FeatureMixing(N)
        self.mix5 = _FeatureMixing(N)
        self.out2 = conv1x1(N, feature_channels)
        self.out3 = conv1x1(N, feature_channels)
        self.out4 = conv1x1(N, feature_channels)
        self.out5 = conv1x1(N, feature_channels)

    def forward(self, y_hat: Tensor) -> list[Tensor]:
        """Rebuilds the padded levels; shapes as :meth:`DRNet.forward`."""
        y = self.attention(y_hat)
        m2 = self.branch2(y)
        m3 = self.mix3(m2, self.branch3(y))
        m4 = self.mix4(m3, self.branch4(y))
        m5 = self.mix5(m4, self.branch5(y))
        return [self.out2(m2), self.out3(m3), self.out4(m4), self.out5(m5)]
