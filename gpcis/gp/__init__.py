"""GP classification on any features: kernels, click posterior, pathwise sampler, L_VI, head.

Knows nothing about images; :mod:`gpcis.models` composes it with backbones.
"""

from gpcis.gp.head import GPHead, GPHeadConfig, GPHeadOutput, check_gp_inputs, check_num_samples, neutral_padding
from gpcis.gp.kernels import ARDRBFKernel, FourierFeatureKernel, LogPositive
from gpcis.gp.losses import vi_loss
from gpcis.gp.pathwise import (
    blocked_mean_path,
    click_gram_cholesky,
    click_gram_cholesky_ex,
    click_l_inv,
    pathwise_posterior,
    predictive_variance,
    prior_path,
    solve_clicks,
    update_path,
    update_weights,
)
from gpcis.gp.variational import AmortizedClickPosterior
from gpcis.gp.weights import WeightPrior

__all__ = [
    "ARDRBFKernel",
    "AmortizedClickPosterior",
    "FourierFeatureKernel",
    "GPHead",
    "GPHeadConfig",
    "GPHeadOutput",
    "LogPositive",
    "WeightPrior",
    "blocked_mean_path",
    "check_gp_inputs",
    "check_num_samples",
    "neutral_padding",
    "click_gram_cholesky",
    "click_gram_cholesky_ex",
    "click_l_inv",
    "pathwise_posterior",
    "predictive_variance",
    "prior_path",
    "solve_clicks",
    "update_path",
    "update_weights",
    "vi_loss",
]
