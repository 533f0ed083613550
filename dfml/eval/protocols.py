"""The named meta-test protocols: the conventions a meta-model is built and scored under.

Every protocol scores the same way (``dfml.eval.evaluate``: each episode fine-tunes a copy of all
parameters for ``eval.steps`` SGD steps at ``eval.lr`` on the support set, BatchNorm on batch
statistics, then scores the query set); they differ in how a freshly built meta-model starts,
which is what a ``random`` baseline *is* and where every meta-trained recipe starts from.

* ``standard`` (the default): the DFML papers' code (FREE, PURER, BiDf-MKD, Trustworthy-DFML).
  Convolutions drawn from N(0, 2/n), n = k*k*out_channels, BatchNorm weight 1 and bias 0
  (``Conv4(init="kaiming_fan_out")``, :func:`dfml.models.conv4.init_fan_out_`); the ``random``
  baseline's head bias is zero.
* ``dfml-2025``: dfml's protocol before 2026-12: PyTorch's default layer initialisation, the
  head left as built. A randomly initialised Conv4 scores several points higher under it (see
  ``docs/benchmarks.md``, "The meta-test protocol"), so its figures are not comparable with the
  papers'. A run saved without ``eval.protocol`` was scored under it.

References:
    Chen et al., "A Closer Look at Few-shot Classification", ICLR 2019 (the initialisation the DFML
    code inherits); Wang et al., FREE; Hu et al., PURER / BiDf-MKD / Trustworthy-DFML (their
    ``method/random.py`` zeroes the head's bias).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["DEFAULT_PROTOCOL", "EARLIER_PROTOCOL", "PROTOCOLS", "Protocol", "get_protocol", "zero_head_bias"]


@dataclass(frozen=True)
class Protocol:
    """One named protocol.

    Attributes:
        name: its name (``eval.protocol``).
        meta_init: the ``init`` argument given to a freshly built meta-model whose architecture
            takes one (``Conv4``); explicit ``train.meta_arch_kwargs.init`` wins.
        random_head_bias: ``"zero"`` (the ``random`` baseline's head bias is zeroed) or ``"default"``.
    """

    name: str
    meta_init: str
    random_head_bias: str


PROTOCOLS: dict[str, Protocol] = {
    "standard": Protocol("standard", meta_init="kaiming_fan_out", random_head_bias="zero"),
    "dfml-2025": Protocol("dfml-2025", meta_init="pytorch", random_head_bias="default"),
}
DEFAULT_PROTOCOL = "standard"
EARLIER_PROTOCOL = "dfml-2025"
"""The protocol of a run saved before ``eval.protocol`` existed (what ``dfml compare`` and a resume assume)."""


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``.

    Raises:
        ValueError: an unknown name (lists the valid ones).
    """
    if name not in PROTOCOLS:
        raise ValueError(
            f"eval.protocol must be one of {', '.join(PROTOCOLS)}, got {name!r}; 'standard' is the DFML papers' "
            f"protocol, '{EARLIER_PROTOCOL}' dfml's earlier one (e.g. --set eval.protocol={EARLIER_PROTOCOL})"
        )
    return PROTOCOLS[name]


def zero_head_bias(model: nn.Module) -> nn.Module:
    """Zero the bias of ``model.head`` (in place) when it is a linear layer with a bias; returns ``model``."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear) and head.bias is not None:
        nn.init.zeros_(head.bias)
    return model
