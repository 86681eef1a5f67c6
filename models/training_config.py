"""How the relevance model trains: the one definition of each training setting and its default.

Plain dataclasses without torch, so the Dagster resources (``serm_dagster.resources.ModelSettings``) derive
their fields, defaults and descriptions from them without loading torch. The defaults are the seed model's
recipe (training from the pretrained encoder); ``WarmStart`` holds how retraining from the champion differs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from models import about


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = about(4, "epochs over the seed set when training from the backbone (the seed model): with "
                        "encoder_lr 2e-4, 4 epochs reach the plateau a 10-epoch run shows on the demo stream")
    batch_size: int = about(32, "pairs per training step")
    encoder_lr: float = about(2e-4, "encoder learning rate when training from the backbone. On the demo stream "
                              "5e-5 left the seed model under-trained after 4 epochs (evolving NDCG@1 84 vs 92 at "
                              "2e-4), so continued training alone looked like evolution")
    head_lr: float = about(1e-3, "learning rate of the head: it starts from scratch, so it needs a larger step than "
                           "the pretrained encoder")
    weight_decay: float = about(0.01, "AdamW weight decay of the encoder's matrices (none on biases, LayerNorm, head)")
    warmup_ratio: float = about(0.1, "share of the steps over which the learning rate warms up linearly")
    max_grad_norm: float = about(1.0, "gradients are clipped to this norm")
    max_length: int = about(64, "tokens of query + title + description the model reads (the simulated "
                            "catalogue's pairs: median 56, 90th percentile 77)")
    frozen_layers: int = about(0, "the embeddings and this many bottom encoder layers are not trained (a cheaper "
                               "backward pass)")
    seed: int = about(13, "training seed: the same seed gives the same shuffles, dropout masks and weights on a CPU")
    mixed_precision: bool = about(True, "autocast (training, and scoring with the same settings) where the hardware "
                                  "has a fast half type "
                                  "(models.inference.autocast_dtype): bf16 on recent GPUs and AMX/AVX512-BF16 CPUs "
                                  "(about 3x faster than fp32 there), fp16 with a GradScaler on older GPUs; the "
                                  "weights and the optimizer stay fp32. False: fp32 everywhere")
    progress: bool = about(True, "a progress line on a terminal (models.progress)")

    def as_params(self) -> dict:
        return asdict(self)

    def warm_started(self, warm: WarmStart) -> TrainingConfig:
        """This recipe as retraining from the champion runs it: ``warm``'s epochs, encoder step and frozen layers."""
        return replace(self, epochs=warm.retrain_epochs, encoder_lr=warm.retrain_encoder_lr,
                       frozen_layers=warm.retrain_frozen_layers)


@dataclass(frozen=True)
class WarmStart:
    """How retraining from the champion (fine-tuning the serving model on the mix) differs from training the seed
    model from the backbone."""

    retrain_epochs: int = about(1, "epochs over the mix when retraining from the champion")
    retrain_encoder_lr: float = about(5e-5, "encoder learning rate when fine-tuning the champion: a quarter of the "
                                      "seed model's step, so the serving model keeps what it knows (at 1e-4 SERM's "
                                      "challengers lost 1.5-2.3 static NDCG@1 points)")
    retrain_frozen_layers: int = about(0, "when retraining from the champion, the embeddings and this many bottom "
                                       "encoder layers stay as they are (about 1.4x faster on a CPU). 0: a frozen "
                                       "bottom cannot learn new words (slang), so even true labels lifted evolving "
                                       "NDCG@1 by 1.5 points with 3 frozen, 4.5 with none")
